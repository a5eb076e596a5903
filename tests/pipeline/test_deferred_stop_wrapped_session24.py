"""A deferred Ctrl-C raised where Python wraps what it catches is still a stop (session 24).

Found by a review: SIGINT ~0.3 s into ``transform --json``, while it imported inside its
deferred-stop block, ended in exit 1 with ``RuntimeError: Error calling __set_name__ on
'Field' instance 'limits' in 'Batcher'``: the stop, raised by the profile hook inside a
dataclass field's ``__set_name__``, came out wrapped (Python 3.11). ``signals_deferred``
now raises the stop it noted from such an error; any other error stays itself.
"""

from __future__ import annotations

import os
import signal

import pytest

from mp2amp.pipeline.stopping import Terminated, signals_deferred


def _python_call() -> None:
    pass


class _StopsInSetName:
    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __set_name__(self, owner: type, name: str) -> None:
        os.kill(os.getpid(), self.signum)  # the signal lands while a class is made
        _python_call()  # the hook raises the stop at this call


@pytest.mark.parametrize(("signum", "stop"), [(signal.SIGINT, KeyboardInterrupt),
                                              (signal.SIGTERM, Terminated)])
def test_a_stop_inside_a_class_body_is_still_the_stop(signum: int,
                                                      stop: type[BaseException]) -> None:
    with pytest.raises(stop) as raised, signals_deferred(sigterm=True):
        type("Batcher", (), {"limits": _StopsInSetName(signum)})
    assert type(raised.value) is stop
    assert isinstance(raised.value.__cause__, RuntimeError)  # what Python made of it


def test_an_error_of_its_own_stays_itself_though_a_stop_was_noted() -> None:
    with pytest.raises(ValueError), signals_deferred() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # noted...
        stop.armed = False  # ...not raised yet (the hook off, as between checks)
        raise ValueError("a real error")
