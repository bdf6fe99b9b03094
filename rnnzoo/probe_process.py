"""The probe process: runs the gradient-flow probes beside training.

A probe (:func:`rnnzoo.gradflow.probe`) runs the model through the step loop on
a small batch, forward and backward: at the README's size about 13 ms of the
training thread, with its logging, every 100 steps of 6.5 ms, 2 % of the run. A
thread of its own does not help: the probe is mostly interpreter work between
small kernels, and two threads take turns on one interpreter lock. Here the probe
runs in a process of its own, on a core that training leaves free: the training
process hands over the probe step's weights and goes on; the answer comes back a
few steps later and is logged under the step it measured. Whether that costs the
training thread less than probing itself depends on the model and on what else
runs on the machine; :class:`Placement` measures both and keeps the cheaper.

The process starts with a copy of the model (pickled, its classes imported there
by name; a plugin file that a class comes from is imported from its path) and
answers ``("ready",)`` once it can probe. Each request is a pickled ``("probe",
step, weights, batch, loss_step)``, the state dict's and the batch's tensors as
raw bytes (pickling a tensor takes 0.3 ms); the answer ``("probed", step,
result)`` or ``("error", text)``. It ends when the training process closes its
end of the socket, or goes away.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnzoo import gradflow
from rnnzoo.model import RNNModel
from rnnzoo.sideprocess import answer_requests, launch, reap
from rnnzoo.task import Batch

#: seconds a probe process that has been told to end may take before it is killed
END_WAIT = 2.0
#: the prefix of the modules rnnzoo imports from plugin files (:mod:`rnnzoo.plugins`)
FILE_PLUGINS = "rnnzoo_user_plugin_"


@dataclass
class Placement:
    """Where the next probe runs: ``"here"`` (the training process) or
    ``"aside"`` (the probe process), whichever cost the training thread less
    the last time each was tried.

    A probe here costs the training thread the whole probe; a probe aside, the
    handing over, the look for its answer at each step's end and the wait for it
    where it must be logged and is not yet in (which grows when the probe takes
    longer than the steps in between) and, when the probe process
    had to share a core (:attr:`ProbeProcess.shared_core`), the time it took from
    whatever shared it, which may have been training. Each place is tried once
    first (probes while the process starts, which run here anyway, do not count);
    from then on every ``recheck``-th probe goes the other way, so that a change
    of load is followed.
    """

    recheck: int = 5
    #: seconds of the training thread the last probe at each place cost
    cost: dict[str, float] = field(default_factory=dict)
    chosen: int = 0

    def choose(self) -> str:
        """Where the next probe runs; call :meth:`record` with what it cost."""
        self.chosen += 1
        for where in ("aside", "here"):
            if where not in self.cost:
                return where
        cheaper = min(self.cost, key=self.cost.__getitem__)
        other = "here" if cheaper == "aside" else "aside"
        return other if self.chosen % self.recheck == 0 else cheaper

    def record(self, where: str, seconds: float) -> None:
        self.cost[where] = seconds


class ProbeProcessError(RuntimeError):
    """The probe process failed or is gone; probe in the training process instead."""


class ProbeProcess:
    """The training side of one probe process; it ends with this object, at the
    latest when the training process exits."""

    def __init__(self, model: RNNModel) -> None:
        """Start the process with a copy of ``model``. Raises ``OSError`` when
        it cannot start, ``pickle.PicklingError`` (or another error of pickling)
        when the model cannot be copied there."""
        copy = pickle.dumps(model, pickle.HIGHEST_PROTOCOL)
        message = pickle.dumps(("model", _plugin_files(), copy), pickle.HIGHEST_PROTOCOL)
        self.process, self._conn = launch("rnnzoo.probe_process", "serve")
        self.close = weakref.finalize(self, _end, self.process, self._conn)
        self.ready = False
        # sent from a thread: the process reads it once torch is imported (a second),
        # and a model larger than the socket's buffer would hold training until then
        self._sending = threading.Thread(target=self._send_quietly, args=(message,), daemon=True)
        self._sending.start()
        #: of the last answer's probe: the seconds it waited for a core (wall time
        #: over CPU time) or, when shorter, its CPU time: what the process running
        #: on its core lost to it, at most
        self.shared_core = 0.0

    def wait_ready(self, timeout: float | None = 0.0) -> bool:
        """Whether the process can probe, waiting up to ``timeout`` seconds (None:
        as long as it takes) for it to start. Raises :class:`ProbeProcessError`."""
        if not self.ready:
            answer = self._receive(timeout)
            if answer is not None:
                self._sending.join()  # read by the process, so sent
                self.ready = True
        return self.ready

    def probe(self, step: int, model: RNNModel, batch: Batch, loss_step: int) -> None:
        """Hand over the probe of ``model`` (its weights now) at ``step``."""
        state = [_raw(t) for t in model.state_dict().values()]  # faster than pickling
        self._send(pickle.dumps(("probe", step, state, _pack_batch(batch), loss_step), -1))

    def answer(self, timeout: float | None = 0.0) -> tuple[int, gradflow.GradflowResult] | None:
        """The probe in flight, ``(step, result)``, waiting up to ``timeout``
        seconds (None: as long as it takes); None when not yet there."""
        answer = self._receive(timeout)
        if answer is None:
            return None
        _, step, result, wall, cpu = answer
        self.shared_core = min(max(wall - cpu, 0.0), cpu)
        return step, result

    def _send_quietly(self, data: bytes) -> None:
        """Send; a process gone meanwhile is found out when its answer is read."""
        with contextlib.suppress(ProbeProcessError):
            self._send(data)

    def _send(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError as exc:
            raise ProbeProcessError(f"the probe process is gone ({exc})") from exc

    def _receive(self, timeout: float | None) -> tuple[Any, ...] | None:
        try:
            if not self._conn.poll(timeout):
                return None
            answer: tuple[Any, ...] = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = self.process.poll()
            raise ProbeProcessError(f"the probe process ended (exit code {code})") from exc
        if answer[0] == "error":
            raise ProbeProcessError(answer[1])
        return answer


def _raw(tensor: Tensor) -> bytearray:
    """A tensor's bytes, on the CPU."""
    return bytearray(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _pack(tensor: Tensor | None) -> tuple[str, tuple[int, ...], bytearray] | None:
    """A tensor as its dtype's name, shape and bytes: :func:`_unpack` reads it back."""
    if tensor is None:
        return None
    return str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), _raw(tensor)


def _unpack(packed: tuple[str, tuple[int, ...], bytearray] | None) -> Tensor | None:
    if packed is None:
        return None
    dtype, shape, raw = packed
    return _from_raw(raw, getattr(torch, dtype), shape)


def _from_raw(raw: bytearray, dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """The tensor whose bytes :func:`_raw` gave."""
    if not raw:  # torch.frombuffer refuses an empty buffer
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).view(shape)


def _pack_batch(batch: Batch) -> dict[str, Any]:
    fields = {
        f: _pack(getattr(batch, f)) for f in ("inputs", "targets", "lengths", "ends", "reset")
    }
    return {**fields, "extras": {k: _pack(v) for k, v in batch.extras.items()}}


def _unpack_batch(packed: dict[str, Any]) -> Batch:
    inputs, targets = _unpack(packed["inputs"]), _unpack(packed["targets"])
    assert inputs is not None and targets is not None
    extras = {k: _unpack(v) for k, v in packed["extras"].items()}
    return Batch(
        inputs=inputs,
        targets=targets,
        lengths=_unpack(packed["lengths"]),
        ends=_unpack(packed["ends"]),
        extras={k: v for k, v in extras.items() if v is not None},
        reset=_unpack(packed["reset"]),
    )


def _plugin_files() -> dict[str, str]:
    """The plugin files imported so far, by module name: the model's classes may
    come from them."""
    return {
        name: str(module.__file__)
        for name, module in list(sys.modules.items())
        if name.startswith(FILE_PLUGINS) and getattr(module, "__file__", None)
    }


class _ModelUnpickler(pickle.Unpickler):
    """Imports a plugin file (by path, under its name in training) when the
    model's pickle names one of its classes, and only then."""

    def __init__(self, data: bytes, files: dict[str, str]) -> None:
        super().__init__(io.BytesIO(data))
        self.files = files

    def find_class(self, module: str, name: str) -> Any:
        if module in self.files and module not in sys.modules:
            from rnnzoo.plugins import import_plugin_file

            import_plugin_file(Path(self.files[module]))
        return super().find_class(module, name)


def _end(process: subprocess.Popen[bytes], conn: Connection) -> None:
    """Close the socket (the process then ends after its probe) and reap it."""
    with contextlib.suppress(OSError):
        conn.close()
    reap(process, END_WAIT)


def serve() -> None:
    """The probe process's main loop (started by :class:`ProbeProcess`)."""
    torch.set_num_threads(1)  # the core training leaves free
    model: RNNModel | None = None

    def answer(request: bytes) -> tuple[Any, ...]:
        nonlocal model
        if model is None:
            model = _copy_of_model(request)
            return ("ready",)
        return _probe(model, request)

    answer_requests(Connection(int(sys.argv[1])), answer)


def _copy_of_model(data: bytes) -> RNNModel:
    """The model of a ``("model", plugin files, pickled model)`` message."""
    _, files, copy = pickle.loads(data)
    model: RNNModel = _ModelUnpickler(copy, files).load()
    return model


def _probe(model: RNNModel, data: bytes) -> tuple[Any, ...]:
    """``("probed", step, result, wall seconds, CPU seconds)``."""
    wall, cpu = time.perf_counter(), time.thread_time()
    _, step, state, packed, loss_step = pickle.loads(data)
    batch = _unpack_batch(packed)
    with torch.no_grad():
        for tensor, raw in zip(model.state_dict().values(), state, strict=True):
            tensor.copy_(_from_raw(raw, tensor.dtype, tuple(tensor.shape)))
    result = gradflow.probe(model, batch, loss_step)
    return ("probed", step, result, time.perf_counter() - wall, time.thread_time() - cpu)
