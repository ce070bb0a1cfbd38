"""In-process access to libnftables: the distribution's `nftables` Python module when it is
importable, otherwise a small ctypes binding to libnftables.so.1 with the same `cmd()` shape.

Either way commands run inside the calling process (and so in its network namespace); no `nft`
process is started. `open_nftables()` is the entry point; it raises `BackendError` when the
library is missing.
"""

from __future__ import annotations

import ctypes
import json

from . import BackendError

SONAME = "libnftables.so.1"
OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON: JSON output, and JSON input is tried first
OUTPUT_TERSE = 1 << 11  # NFT_CTX_OUTPUT_TERSE: listings omit set elements


class Libnftables:
    """One libnftables context through ctypes. `cmd(text)` returns `(rc, output, error)` like the
    distribution module's `Nftables.cmd`. Not thread-safe: callers serialise access."""

    _ctx = None  # until nft_ctx_new succeeded, so close() and __del__ have nothing to free

    def __init__(self, soname: str = SONAME) -> None:
        try:
            lib = ctypes.CDLL(soname)
        except OSError as error:
            raise BackendError("nftables", f"load {soname}", f"{error}; install the nftables package "
                               "(Debian: apt install libnftables1 nftables)") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._ctx = lib.nft_ctx_new(0)  # NFT_CTX_DEFAULT
        if not self._ctx:
            raise BackendError("nftables", "create a libnftables context", "nft_ctx_new failed (out of memory?)")
        if lib.nft_ctx_buffer_output(self._ctx) or lib.nft_ctx_buffer_error(self._ctx):
            raise BackendError("nftables", "buffer libnftables output", "nft_ctx_buffer_output/error failed")
        self.set_output_flags(OUTPUT_JSON)

    def set_output_flags(self, flags: int) -> None:
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)

    def cmd(self, text: str) -> tuple[int, str, str]:
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        output = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        error = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return rc, output.decode(errors="replace"), error.decode(errors="replace")

    def close(self) -> None:
        if self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()


class _DistributionNftables:
    """The distribution's `nftables.Nftables` behind the same two methods."""

    def __init__(self, module) -> None:
        self._nft = module.Nftables(sofile=SONAME)

    def set_output_flags(self, flags: int) -> None:
        self._nft.set_json_output(bool(flags & OUTPUT_JSON))
        # Older bindings lack terse output; listings then carry set elements too, which only costs time.
        if hasattr(self._nft, "set_terse_output"):
            self._nft.set_terse_output(bool(flags & OUTPUT_TERSE))

    def cmd(self, text: str) -> tuple[int, str, str]:
        return self._nft.cmd(text)

    def close(self) -> None:
        """The module frees its context itself."""


def open_nftables() -> Libnftables | _DistributionNftables:
    """A libnftables context with JSON output: the distribution module if importable, else ctypes."""
    try:
        import nftables
    except ImportError:
        return Libnftables()
    if not hasattr(nftables, "Nftables"):  # an unrelated module of that name
        return Libnftables()
    try:
        handle = _DistributionNftables(nftables)
    except OSError as error:
        raise BackendError("nftables", f"load {SONAME}", f"{error}; install the nftables package") from None
    handle.set_output_flags(OUTPUT_JSON)
    return handle


def run_json(handle: Libnftables | _DistributionNftables, commands: list[dict], *, terse: bool = False) -> dict:
    """Run a JSON batch (one transaction) and return the parsed output (`{}` when there is none).
    Raises `NftError` with libnftables' own message on failure."""
    if terse:
        handle.set_output_flags(OUTPUT_JSON | OUTPUT_TERSE)
    try:
        rc, output, error = handle.cmd(json.dumps({"nftables": commands}, separators=(",", ":")))
    finally:
        if terse:
            handle.set_output_flags(OUTPUT_JSON)
    if rc != 0:
        # One "Error:" line per failed command of the batch, often the same one: say each once.
        lines = [line.replace("internal:0:0-0: ", "").strip() for line in error.splitlines()]
        raise NftError("; ".join(dict.fromkeys(line for line in lines if line)) or f"libnftables returned {rc}")
    return json.loads(output) if output.strip() else {}


class NftError(Exception):
    """libnftables' error text for a failed command; the backend wraps it in a BackendError."""
