"""One classification for the whole product: kinds, messages, advice, error ids, no paths."""

from __future__ import annotations

import pytest

from steadyframe.errors import ErrorKind, InvalidInputError, JobCancelled, ModelUnavailableError
from steadyframe.taxonomy import classify, describe, kind_of, new_error_id, scrub_paths, user_text


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.OutOfMemoryError: classification goes by type name, not import."""


class AcceleratorError(RuntimeError):
    pass


class RepositoryNotFoundError(OSError):
    pass


class UnidentifiedImageError(OSError):
    pass


@pytest.mark.parametrize(
    "exc,stage,kind",
    [
        (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "denoise", ErrorKind.OUT_OF_MEMORY),
        (MemoryError(), "decode", ErrorKind.OUT_OF_MEMORY),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), "decode", ErrorKind.OUT_OF_MEMORY),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"), "denoise", ErrorKind.OUT_OF_MEMORY),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), "upscale", ErrorKind.OUT_OF_MEMORY),
        (AcceleratorError("CUDA error: out of memory"), "denoise", ErrorKind.OUT_OF_MEMORY),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), "denoise", ErrorKind.DEVICE_ERROR),
        (RuntimeError("CUDA error: device-side assert triggered"), "decode", ErrorKind.DEVICE_ERROR),
        (AcceleratorError("unspecified launch failure"), "denoise", ErrorKind.DEVICE_ERROR),
        (RepositoryNotFoundError("401 for THUDM/CogVideoX-9b"), "load", ErrorKind.MODEL_UNAVAILABLE),
        (FileNotFoundError("/srv/models/x/model.safetensors"), "load", ErrorKind.MODEL_UNAVAILABLE),
        (UnidentifiedImageError("cannot identify image file '/tmp/in.png'"), None, ErrorKind.INVALID_INPUT),
        (InvalidInputError("The prompt is too long."), None, ErrorKind.INVALID_INPUT),
        (ModelUnavailableError("No weights for tiny-x."), "load", ErrorKind.MODEL_UNAVAILABLE),
        (JobCancelled(), "denoise", ErrorKind.CANCELLED),
        (TimeoutError("read timed out"), "load", ErrorKind.MODEL_UNAVAILABLE),
        (ValueError("shapes do not match"), "denoise", ErrorKind.INTERNAL),
        (FileNotFoundError("/srv/out/frame.png"), "save", ErrorKind.INTERNAL),
    ],
)
def test_classify_maps_each_failure_to_its_kind(exc: BaseException, stage: str | None, kind: ErrorKind) -> None:
    classified = classify(exc, stage)
    assert classified.kind == kind
    assert classified.message and classified.advice
    assert classified.sticky == (kind == ErrorKind.DEVICE_ERROR)


def test_user_text_never_holds_a_path() -> None:
    exc = FileNotFoundError("[Errno 2] No such file: '/home/alice/secret/models/cog/vae.safetensors'")
    classified = classify(exc, "load")
    assert "/home" not in classified.message and "alice" not in classified.message
    assert "vae.safetensors" in classified.message  # the file name still helps
    own = classify(InvalidInputError("cannot read /var/lib/steadyframe/uploads/a.png"))
    assert "/var/lib" not in own.message and "a.png" in own.message


def test_scrub_paths_keeps_the_last_component() -> None:
    assert scrub_paths("open /a/b/c.pth failed") == "open c.pth failed"
    assert scrub_paths(r"C:\Users\bob\w.bin missing") == "w.bin missing"
    assert scrub_paths("no paths here, 3/4 done") == "no paths here, 3/4 done"


def test_advice_depends_on_the_stage_where_it_helps() -> None:
    assert "upscal" in classify(MemoryError(), "upscale").advice.lower()
    assert "interpolation" in classify(MemoryError(), "interpolate").advice.lower()
    assert classify(MemoryError(), "denoise").message == "The job ran out of memory while denoising."


def test_own_errors_keep_their_advice_override() -> None:
    classified = classify(InvalidInputError("Bad fps.", advice="Use 8 or 16."))
    assert classified.message == "Bad fps." and classified.advice == "Use 8 or 16."


def test_describe_covers_every_kind() -> None:
    for kind in ErrorKind:
        described = describe(kind, "decode", detail="It was killed by SIGKILL.")
        assert described.kind == kind and described.message.endswith("SIGKILL.") and described.advice


def test_error_ids_are_short_and_unique() -> None:
    ids = {new_error_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(len(i) <= 16 and i.startswith("err-") for i in ids)
    assert user_text("It broke.", "Retry.", "err-1").endswith("(error id err-1)")


def test_a_full_disk_is_recognised_however_it_is_raised() -> None:
    import errno
    import sqlite3

    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert kind_of(enospc, "encode_video") == ErrorKind.DISK_FULL
    assert kind_of(sqlite3.OperationalError("database or disk is full")) == ErrorKind.DISK_FULL
    try:
        try:
            raise enospc
        except OSError as inner:
            raise RuntimeError("could not write the GIF") from inner
    except RuntimeError as outer:
        assert kind_of(outer, "save") == ErrorKind.DISK_FULL  # found through the cause chain
    assert kind_of(OSError(errno.EACCES, "Permission denied"), "save") == ErrorKind.INTERNAL
    described = classify(enospc, "save")
    assert "space" in described.advice and "/" not in described.message
