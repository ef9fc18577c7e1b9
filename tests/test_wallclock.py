"""The wall-clock loop with a fake clock: callbacks at their times, in order, sleeping between."""
from engines.wallclock import WallClockLoop


class FakeClock:
    def __init__(self):
        self.t = 100.0
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(round(s, 9))
        self.t += s


def test_callbacks_run_at_their_times_and_late_ones_run_at_once():
    clock = FakeClock()
    loop = WallClockLoop(clock, clock.sleep)
    seen = []

    def busy():  # a 0.5 s step starting at 1.0
        seen.append(("busy", loop.now_s))
        clock.t += 0.5
        loop.at(loop.now_s, lambda: seen.append(("end", loop.now_s)))

    loop.at(1.0, busy)
    loop.at(1.2, lambda: seen.append(("arrival", loop.now_s)))
    loop.at(2.0, lambda: seen.append(("later", loop.now_s)))
    end = loop.run()
    # the arrival was due during the step: it runs right after it, 0.3 s late, before the
    # step's end (due at 1.5 too, but queued later)
    assert seen == [("busy", 1.0), ("arrival", 1.5), ("end", 1.5), ("later", 2.0)]
    assert end == 2.0 and abs(loop.max_lateness_s - 0.3) < 1e-9
    assert clock.slept == [1.0, 0.5]
