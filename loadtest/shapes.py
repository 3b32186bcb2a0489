"""Load shapes for the WebSocket users: steady, ramp (connection storms) and spike.

Each reads ``-u`` (peak WebSocket users) and ``-t`` (the whole run) like a plain run does, adds the
publishers on top (they are ``fixed_count`` users), and ends the run by itself when the time is up.
Imports nothing of ours.
"""

from __future__ import annotations

from abc import abstractmethod

from locust import LoadTestShape


class _Shape(LoadTestShape):
    abstract = True
    use_common_options = True

    def _options(self) -> tuple[int, float, int]:
        options = self.runner.environment.parsed_options
        peak = max(1, int(options.num_users or 10))
        seconds = float(options.run_time or 60)
        return peak, seconds, int(options.publishers)

    @abstractmethod
    def users_at(self, elapsed: float, peak: int, seconds: float) -> tuple[int, float]:
        """``(WebSocket users, spawn rate)`` at ``elapsed`` seconds into a run to ``peak`` users."""

    def tick(self) -> tuple[int, float] | None:
        peak, seconds, publishers = self._options()
        elapsed = self.get_run_time()
        if elapsed >= seconds:
            return None
        users, rate = self.users_at(elapsed, peak, seconds)
        return users + publishers, rate


class SteadyShape(_Shape):
    """All users within the first tenth of the run (at most 5 s), then held."""

    def users_at(self, elapsed: float, peak: int, seconds: float) -> tuple[int, float]:
        return peak, max(1.0, peak / min(5.0, max(0.5, seconds / 10)))


class RampShape(_Shape):
    """Four steps of a quarter of the users each; a step's users all connect at once (a storm)."""

    def users_at(self, elapsed: float, peak: int, seconds: float) -> tuple[int, float]:
        step = min(3, int(elapsed // (seconds / 4)))
        return max(1, round(peak * (step + 1) / 4)), float(max(peak, 1))


class SpikeShape(_Shape):
    """A fifth of the users, then all of them at once for the middle third, then back to a fifth."""

    def users_at(self, elapsed: float, peak: int, seconds: float) -> tuple[int, float]:
        base = max(1, peak // 5)
        spiking = seconds / 3 <= elapsed < 2 * seconds / 3
        return (peak if spiking else base), float(max(peak, 1))


SHAPES: dict[str, type[LoadTestShape]] = {"steady": SteadyShape, "ramp": RampShape, "spike": SpikeShape}
