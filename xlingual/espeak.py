"""eSpeak NG through ctypes: speech synthesis and IPA for the synthetic corpus and phone units.

The library and its data come from the `espeakng-loader` wheel (no system package). eSpeak NG keeps global
state (current voice, parameters, one synth callback), so the library is initialised lazily, once per process,
and every call into it holds one lock. Worker processes initialise their own copy on first use.

Reproducibility: the waveform generator keeps state from one utterance to the next (the pitch-flutter phase,
automatic gain, roughness cycle counter are C statics that no API call resets), so the same text spoken twice
in a row gives slightly different samples. synthesize() therefore unloads and reloads the library before each
utterance (about 1.5 ms with reloading the voice, a third of the time a 3 s utterance takes), which makes every
call a pure function of its arguments, whatever ran before and in whichever process.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

ESPEAK_RATE = 22050  # Hz, what espeak_Initialize reports for the bundled data (synthesize returns the actual rate)

# espeak_AUDIO_OUTPUT / flags / espeak_PARAMETER values from speak_lib.h (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode: IPA names, no separator between phonemes
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute accepted by espeak_SetParameter(espeakRATE)
PITCH_RANGE = (0, 100)  # base pitch and pitch range: 0..100, 50 = the voice's default

# language-switch markers such as "(en)" that eSpeak puts around words it reads with another language
_SWITCH_MARK = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)", re.IGNORECASE)


class EspeakError(RuntimeError):
    """The eSpeak NG library could not be loaded, initialised or failed while synthesising."""


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.RLock()
_lib: ctypes.CDLL | None = None
_lib_path: str | None = None  # the file loaded: the wheel's library, or a private copy (see _unload)
_libc: ctypes.CDLL | None = None
_sample_rate = 0
_dirty = False  # the loaded library has synthesised since it was initialised
_chunks: list[np.ndarray] = []  # filled by the synth callback while _lock is held
_voices: dict[str, str] | None = None  # language code -> voice name, cached after the first listing
_voice_codes: frozenset[str] = frozenset()  # lowercased keys of _voices, for has_voice()


def _on_audio(wav, numsamples: int, events) -> int:
    # Called by eSpeak from inside espeak_Synth (synchronous mode, same thread). wav == NULL marks the end.
    if wav and numsamples > 0:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
    return 0  # 0 = continue synthesis


_callback_ref = _CALLBACK(_on_audio)  # module-level: ctypes callbacks must outlive every call that uses them


def _reset_after_fork() -> None:
    # A forked child inherits the parent's lock, possibly held by another thread: give it a fresh one.
    # The inherited library state itself stays usable in the child.
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def data_path() -> Path:
    """The `espeak-ng-data` folder shipped by the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError("the 'espeakng-loader' package is not installed: pip install espeakng-loader") from None
    return Path(espeakng_loader.get_data_path())


def _library() -> ctypes.CDLL:
    """Load and initialise eSpeak NG once per process; callers hold _lock."""
    global _lib, _lib_path, _libc, _sample_rate
    if _lib is not None:
        return _lib
    if _lib_path is None:
        import espeakng_loader

        _lib_path = espeakng_loader.get_library_path()
    path = _lib_path
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise EspeakError(f"cannot load the eSpeak NG library {path}: {e} (reinstall espeakng-loader)") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    # The path argument may name espeak-ng-data itself or its parent folder.
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), 0)
    if rate <= 0:
        raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data at {data_path()}")
    lib.espeak_SetSynthCallback(_callback_ref)
    # Noise sources (breathy variants such as f2, Klatt voices) draw from eSpeak's own generator and from libc
    # rand(); seeding both per call makes synthesis bit-reproducible whatever ran before in this process.
    _libc = ctypes.CDLL(None)
    _sample_rate, _lib = rate, lib
    return lib


def _remove_private_copy(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _unload() -> None:
    """Terminate and unload the library so that the next _library() starts from pristine C statics.

    Callers hold _lock. If something else in the process also holds the wheel's library open, dlclose
    cannot unload it; from then on a private copy of the file (in a temporary folder removed at exit) is
    loaded instead, which nobody else can hold.
    """
    global _lib, _lib_path, _dirty
    if _lib is None:
        return
    import _ctypes

    _lib.espeak_Terminate()
    _ctypes.dlclose(_lib._handle)
    _lib, _dirty = None, False
    try:  # dlopen with RTLD_NOLOAD succeeds only if the file is still loaded
        probe = ctypes.CDLL(_lib_path, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return  # unloaded, as wanted
    _ctypes.dlclose(probe._handle)  # the probe took a reference of its own
    folder = tempfile.mkdtemp(prefix="xlingual-espeak-")
    atexit.register(_remove_private_copy, folder)
    _lib_path = shutil.copy(_lib_path, os.path.join(folder, "libespeak-ng-private.so"))


def sample_rate() -> int:
    """Sample rate of synthesised audio in Hz (22050 for the bundled data)."""
    with _lock:
        _library()
        return _sample_rate


def version() -> str:
    """eSpeak NG version string, e.g. '1.52.0'."""
    with _lock:
        return _library().espeak_Info(None).decode()


def list_voices() -> dict[str, str]:
    """Language codes eSpeak NG can speak, mapped to the voice name (e.g. {'bn': 'Bengali', ...})."""
    global _voices, _voice_codes
    with _lock:
        if _voices is None:
            arr = _library().espeak_ListVoices(None)
            voices: dict[str, str] = {}
            i = 0
            while arr[i]:
                v = arr[i].contents
                # `languages` is a sequence of (priority byte, NUL-terminated name) ending with a zero byte,
                # hence a raw address (a c_char_p field would stop at the first NUL).
                addr = v.languages
                while addr and ctypes.c_ubyte.from_address(addr).value != 0:
                    lang = ctypes.string_at(addr + 1)
                    voices.setdefault(lang.decode(), v.name.decode())
                    addr += 2 + len(lang)
                i += 1
            _voices = dict(sorted(voices.items()))
            _voice_codes = frozenset(k.lower() for k in _voices)
        return dict(_voices)


def has_voice(code: str) -> bool:
    """Whether eSpeak NG has a voice for language `code` (e.g. 'bn', 'tr', 'en-us'; case-insensitive)."""
    if _voices is None:
        list_voices()
    return code.lower() in _voice_codes


def list_variants() -> list[str]:
    """Voice variants (files in espeak-ng-data/voices/!v), e.g. ['Alex', ..., 'f1', ..., 'm1', ...]."""
    return list(_variants())


@functools.lru_cache(maxsize=1)
def _variants() -> tuple[str, ...]:
    folder = data_path() / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


def _set_voice(voice: str, variant: str | None) -> None:
    """Select language voice (+variant); callers hold _lock."""
    if not has_voice(voice):
        raise ValueError(f"unknown eSpeak NG voice {voice!r}; list the available ones with "
                         f"xlingual.espeak.list_voices()")
    if variant is not None and variant not in _variants():
        raise ValueError(f"unknown eSpeak NG voice variant {variant!r}; list the available ones with "
                         f"xlingual.espeak.list_variants()")
    name = voice if variant is None else f"{voice}+{variant}"
    if _library().espeak_SetVoiceByName(name.encode()) != _EE_OK:
        raise ValueError(f"eSpeak NG cannot select voice {name!r}; list the available ones with "
                         f"xlingual.espeak.list_voices() and xlingual.espeak.list_variants()")


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    if not (bounds[0] <= value <= bounds[1]):
        raise ValueError(f"{name} must be in {bounds[0]}..{bounds[1]}, got {value}")


def synthesize(text: str, voice: str = "bn", variant: str | None = None, rate: int = 175, pitch: int = 50,
               pitch_range: int = 50, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak `text` with eSpeak NG.

    Args:
        text: UTF-8 text (not SSML, no [[phoneme]] input).
        voice: language voice, e.g. 'bn', 'tr'; see list_voices().
        variant: a voice variant such as 'f2' or 'm3' (see list_variants()); None = the language default.
        rate: speaking rate in words per minute (80..450).
        pitch: base pitch 0..100 (50 = the voice's default).
        pitch_range: intonation range 0..100 (0 = monotone, 50 = default).
        seed: seeds the random generators that breathy and Klatt variants draw noise from, so that the
            same arguments always give the same samples.
    Returns:
        (samples, sample_rate): (num_samples,) float32 in [-1, 1) and the rate in Hz (22050).
    Raises:
        ValueError: empty text, unknown voice/variant, parameters out of range.
        EspeakError: the library failed.
    """
    global _dirty
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"nothing to synthesize: text is {text!r}")
    _check_range("rate", rate, RATE_RANGE)
    _check_range("pitch", pitch, PITCH_RANGE)
    _check_range("pitch_range", pitch_range, PITCH_RANGE)
    data = text.encode("utf-8")
    with _lock:
        if _dirty:
            _unload()
        lib = _library()
        _dirty = True
        _set_voice(voice, variant)
        # SetVoiceByName resets the speech parameters, so set them after choosing the voice.
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")
        lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
        _libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
        _chunks.clear()
        try:
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != _EE_OK:
                raise EspeakError(f"espeak_Synth failed with error {err} for voice {voice!r}, text {text[:60]!r}")
            lib.espeak_Synchronize()
            pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        finally:
            _chunks.clear()
        rate_hz = _sample_rate
    return (pcm.astype(np.float32) / 32768.0), rate_hz


def phonemize(text: str, voice: str = "bn") -> str:
    """IPA transcription of `text` as eSpeak NG reads it: words separated by single spaces.

    Stress marks (ˈ ˌ) and length marks are kept; language-switch markers such as '(en)' are removed.
    """
    if not isinstance(text, str):
        raise ValueError(f"phonemize needs a str, got {type(text).__name__}")
    buf = ctypes.create_string_buffer(text.encode("utf-8"))  # NUL-terminated; must outlive the loop
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    parts: list[str] = []
    with _lock:
        lib = _library()
        _set_voice(voice, None)
        # espeak_TextToPhonemes translates one clause per call and advances the pointer; NULL = text consumed.
        while ptr.value:
            out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            if out:
                parts.append(out.decode("utf-8", errors="replace"))
    return " ".join(_SWITCH_MARK.sub("", " ".join(parts)).split())
