"""The embedded default corpus: eSpeak NG speech of CLDR words, for any language that has both.

Text: words from the language's CLDR data (territory, language, script, currency, month, day and time-zone
names, via babel), normalized with xlingual.text, kept only if eSpeak NG reads them as a word (not spelled
letter by letter); sentences of 3-8 of them drawn with a seeded RNG. Every sentence belongs to exactly one split
(a hash of the sentence picks it), so train/dev/test never share a sentence.

Speakers: an eSpeak voice variant (espeak-ng-data/voices/!v) x base pitch x rate x pitch range. The variants are
partitioned between the splits, so the speaker sets are disjoint too. Each utterance jitters rate and pitch a
little. Optional pink noise at a chosen SNR and an 8 kHz telephone channel (Babel is telephone speech).

Layout written by prepare_synthetic():

    output_dir/<lang>/<split>.jsonl          manifest (xlingual.corpus), audio paths relative to it
    output_dir/<lang>/wav/<split>/<id>.wav   16 kHz 16-bit mono
    output_dir/<lang>/<split>.done.json      completion marker: the generation config and its hash

Reproducibility: everything about utterance i of (language, split) comes from an RNG seeded by
(seed, language, split, i), and eSpeak NG synthesis is a pure function of its arguments (xlingual.espeak
reloads the library per utterance), so the same config gives bit-identical manifests and audio whatever the
number of worker processes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import re
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xlingual import espeak
from xlingual.audio import SAMPLE_RATE, audio_info, resample, save_audio
from xlingual.corpus import Utterance, write_manifest
from xlingual.fileio import read_json, write_json
from xlingual.text import normalize

FORMAT_VERSION = 1  # bump when a change alters the generated audio or text; part of every marker's hash

DEFAULT_LANGUAGES = ("bn", "as", "th", "tr")
DEFAULT_HOURS = {"train": 0.5, "dev": 0.05, "test": 0.05}
SPLITS = ("train", "dev", "test")

# Sentences: how many words, drawn without replacement from the vocabulary.
MIN_WORDS, MAX_WORDS = 3, 8
MAX_WORD_CHARS = 24  # longer CLDR "words" are Thai-style unspaced phrases that make overlong utterances
MIN_VOCABULARY = 200  # fewer usable words than this and the language is refused
MAX_DRAWS = 1000  # sentence draws per utterance before giving up (vocabulary too small for the budget)
# A sentence's split is fixed by a hash of its text: buckets [lo, hi) out of 100.
SPLIT_BUCKETS = {"test": (0, 10), "dev": (10, 20), "train": (20, 100)}

# Speakers: each variant is crossed with these settings (eSpeak units: pitch and range 0..100, rate in wpm).
SPEAKER_PITCHES = (35, 50, 65)
SPEAKER_RATES = (145, 170, 195)
SPEAKER_RANGES = (35, 65)
RATE_JITTER = 6  # +- wpm per utterance, within the speaker's setting
PITCH_JITTER = 3  # +- pitch units per utterance
# Share of the voice variants held out for test and for dev (per gender, at least one each).
HELD_OUT_VARIANT_FRACTION = 0.12
# Variants that are sound effects rather than voices: robots, heavy echo, whisper, no voicing, a speed hack.
EXCLUDED_VARIANTS = frozenset({
    "fast", "Demonic", "UniRobot", "anikaRobot", "RicishayMax", "RicishayMax2", "RicishayMax3", "caleb",
    "whisper", "whisperf", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8",
})

# Channel simulation.
TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)  # Hz, the classic telephone pass band
MU_LAW = 255  # G.711 mu-law companding, 8 bits per sample
PEAK_LIMIT = 0.98  # rescale an utterance whose peak exceeds this (noise can push it past full scale)
ACTIVE_FRAME_DB = -30.0  # frames within this of the loudest 20 ms frame count as speech for the SNR

DEFAULT_UTTERANCE_SECONDS = 3.0  # first guess of the mean duration, to size the first batch of work


@dataclass(frozen=True)
class SyntheticLanguage:
    """How one language is synthesised: a few lines per language, nothing else differs."""

    voice: str  # eSpeak NG voice (language) name, see xlingual.espeak.list_voices()
    locale: str  # CLDR locale the words come from, see babel.Locale.parse()
    spaces: bool = True  # written with spaces between words; Thai is not (eSpeak splits a CLDR phrase)
    note: str = ""


# Default set first (the reference experiment's Bengali, Assamese, Lao, Turkish), then extras that eSpeak NG
# reads well (few CLDR words it has to spell out). Any other code works too if eSpeak NG and CLDR both have it.
LANGUAGES: dict[str, SyntheticLanguage] = {
    "bn": SyntheticLanguage("bn", "bn"),
    "as": SyntheticLanguage("as", "as"),
    "th": SyntheticLanguage("th", "th", spaces=False, note="stands in for Lao, which eSpeak NG lacks"),
    "tr": SyntheticLanguage("tr", "tr"),
    "hi": SyntheticLanguage("hi", "hi"),
    "az": SyntheticLanguage("az", "az"),
    "ur": SyntheticLanguage("ur", "ur"),
    "ne": SyntheticLanguage("ne", "ne"),
    "mr": SyntheticLanguage("mr", "mr"),
    "kk": SyntheticLanguage("kk", "kk"),
    "uz": SyntheticLanguage("uz", "uz"),
    "ta": SyntheticLanguage("ta", "ta"),
    "te": SyntheticLanguage("te", "te"),
}


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: one voice variant at fixed pitch, rate and pitch range."""

    voice: str
    variant: str
    pitch: int
    rate: int
    pitch_range: int

    @property
    def id(self) -> str:  # stable, no spaces (Kaldi-safe): 'bn+m3-p35-r170-g65'
        return f"{self.voice}+{self.variant.replace(' ', '_')}-p{self.pitch}-r{self.rate}-g{self.pitch_range}"


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to render one utterance (picklable)."""

    path: str
    speak: str  # text as given to eSpeak (see _speakable)
    voice: str
    variant: str
    rate: int
    pitch: int
    pitch_range: int
    espeak_seed: int
    noise_seed: int
    noise_snr: float | None
    telephone: bool


# ---------------------------------------------------------------------------------------------------------------
# Languages and text


def resolve_language(code: str) -> SyntheticLanguage:
    """The synthesis settings for `code`: its LANGUAGES entry, or voice = locale = code if eSpeak and CLDR have it.

    Raises:
        ValueError: eSpeak NG has no voice or CLDR has no locale for the code.
    """
    entry = LANGUAGES.get(code) or SyntheticLanguage(code, code)
    problems = []
    if not espeak.has_voice(entry.voice):
        problems.append(f"eSpeak NG has no voice {entry.voice!r} (see xlingual.espeak.list_voices())")
    try:
        from babel import Locale, UnknownLocaleError

        Locale.parse(entry.locale)
    except (UnknownLocaleError, ValueError):
        problems.append(f"CLDR (babel) has no locale {entry.locale!r}")
    if problems:
        raise ValueError(f"cannot synthesise language {code!r}: {'; '.join(problems)}. A synthetic language needs "
                         f"both; ready-made ones: {', '.join(LANGUAGES)}")
    return entry


def _cldr_texts(locale: str) -> list[str]:
    """Display strings from CLDR for `locale`: names of territories, languages, scripts, currencies, months, days,
    quarters, time-zone exemplar cities and metazones, in a fixed order."""
    from babel import Locale

    loc = Locale.parse(locale)
    texts: list[str] = []
    for mapping in (loc.territories, loc.languages, loc.scripts, loc.currencies, loc.variants):
        texts += [mapping[k] for k in sorted(mapping)]
    for table in (loc.months, loc.days, loc.quarters):
        for context in sorted(table):
            for width in sorted(table[context]):
                names = table[context][width]
                texts += [names[k] for k in sorted(names)]
    zones = loc.time_zones
    texts += [zones[k]["city"] for k in sorted(zones) if "city" in zones[k]]
    metazones = loc.meta_zones
    for k in sorted(metazones):
        for form in ("long", "short"):
            names = metazones[k].get(form, {})
            texts += [names[t] for t in sorted(names)]
    return [t for t in texts if isinstance(t, str)]


def _script(char: str) -> str | None:
    """Unicode script of a letter, from its name ('BENGALI LETTER KA' -> 'BENGALI'); None for non-letters."""
    if not unicodedata.category(char).startswith("L"):
        return None
    try:
        return unicodedata.name(char).split()[0]
    except ValueError:
        return None


def _speakable(text: str, code: str) -> str:
    """Text as eSpeak NG should get it (the transcript keeps the normalized form).

    Bengali: the normalizer writes য় precomposed (U+09DF), which eSpeak's bn rules need before a vowel sign
    (দিয়ে, মেয়ে; decomposed they lose the syllable), but word-finally the bn rules then add a vowel (নয় -> nɔjo,
    সময় -> ʃɔmɔjo). Word-final য় is therefore passed decomposed, which bn reads right (nɔj). Assamese reads
    the precomposed form right everywhere and spells out the decomposed one letter by letter.
    """
    if code == "bn":
        text = re.sub("\u09df(?![\u0980-\u09ff])", "\u09af\u09bc", text)
    return text


def vocabulary(code: str) -> list[str]:
    """Sorted normalized words of `code` from CLDR that eSpeak NG reads as words, typically 1.2k-1.9k of them.

    A word is kept if it is letters and marks only (no digits: eSpeak would read them as number words the
    transcript does not contain), all in the language's main script (the most common one in its CLDR text), at
    most MAX_WORD_CHARS long, and eSpeak NG reads it as one word rather than spelling it out (it spells words
    with letters its rules lack, e.g. Bengali র in Assamese, or a zero-width joiner).
    """
    entry = resolve_language(code)
    words: set[str] = set()
    for text in _cldr_texts(entry.locale):
        words.update(normalize(text, code).split())
    scripts = Counter(s for w in words for s in map(_script, w) if s)
    if not scripts:
        raise ValueError(f"CLDR locale {entry.locale!r} gives no words for language {code!r}")
    main = scripts.most_common(1)[0][0]
    keep = []
    for word in sorted(words):
        if len(word) > MAX_WORD_CHARS:
            continue
        if not all(unicodedata.category(c)[0] in "LM" or c in "\u200c\u200d" for c in word):
            continue
        if any(s not in (None, main) for s in map(_script, word)):
            continue
        phones = espeak.phonemize(_speakable(word, code), entry.voice)
        # Spelling letter names gives several "words" and far more phonemes than letters; unspaced scripts
        # (Thai) legitimately come back as several words, so only the length test applies to them.
        if not phones or len(phones) > 3 * len(word) + 6 or (entry.spaces and " " in phones):
            continue
        keep.append(word)
    if len(keep) < MIN_VOCABULARY:
        raise ValueError(f"only {len(keep)} usable CLDR words for language {code!r} (need {MIN_VOCABULARY}); "
                         f"eSpeak NG probably spells this script out. Pick another language")
    return keep


def _ipa_form(word: str, code: str) -> str:
    """A word's pronunciation as compared across languages: eSpeak NG's IPA without stress marks."""
    entry = resolve_language(code)
    return espeak.phonemize(_speakable(word, code), entry.voice).replace("ˈ", "").replace("ˌ", "")


def shared_word_forms(languages: tuple[str, ...] | list[str]) -> dict[str, set[str]]:
    """Per language, its vocabulary words that another of `languages` also has: the same written form, or the
    same pronunciation (IPA without stress: a place name spelled in two scripts and said alike). Removing them
    gives the control corpus, where closeness cannot come from shared proper nouns."""
    vocab = {code: vocabulary(code) for code in languages}
    written = {code: set(words) for code, words in vocab.items()}
    spoken = {code: {w: _ipa_form(w, code) for w in words} for code, words in vocab.items()}
    ipa_sets = {code: set(forms.values()) for code, forms in spoken.items()}
    shared = {}
    for code in languages:
        others_w = set().union(*(written[o] for o in languages if o != code))
        others_p = set().union(*(ipa_sets[o] for o in languages if o != code))
        shared[code] = {w for w in vocab[code] if w in others_w or spoken[code][w] in others_p}
    return shared


def _stable_int(text: str) -> int:
    """A 64-bit integer from a string, the same in every process and Python version (unlike hash())."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "little")


def _split_of(sentence: str, code: str) -> str:
    bucket = _stable_int(f"{code}:{sentence}") % 100
    return next(split for split, (lo, hi) in SPLIT_BUCKETS.items() if lo <= bucket < hi)


def _utterance_rng(seed: int, code: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _stable_int(code), _stable_int(split), index]))


# ---------------------------------------------------------------------------------------------------------------
# Speakers


def _variant_gender(variant: str) -> str:
    """'female' or 'male' from the variant file's `gender` line (male when absent, eSpeak's default)."""
    path = espeak.data_path() / "voices" / "!v" / variant
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "gender":
            return "female" if parts[1].lower().startswith("f") else "male"
    return "male"


def split_variants() -> dict[str, list[str]]:
    """Voice variants of each split, disjoint: per gender, ordered by a hash of the name, the first
    HELD_OUT_VARIANT_FRACTION go to test, the next to dev, the rest to train."""
    by_gender: dict[str, list[str]] = {}
    for variant in espeak.list_variants():
        if variant not in EXCLUDED_VARIANTS:
            by_gender.setdefault(_variant_gender(variant), []).append(variant)
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for gender in sorted(by_gender):
        names = sorted(by_gender[gender], key=lambda v: hashlib.sha1(v.encode()).hexdigest())
        n = max(1, round(HELD_OUT_VARIANT_FRACTION * len(names)))
        if len(names) < 2 * n + 1:
            raise RuntimeError(f"too few {gender} eSpeak NG voice variants ({names}) to hold out test and dev ones")
        out["test"] += names[:n]
        out["dev"] += names[n:2 * n]
        out["train"] += names[2 * n:]
    return {split: sorted(v) for split, v in out.items()}


def speakers(code: str, split: str) -> list[Speaker]:
    """All speakers of (language, split): its variants x SPEAKER_PITCHES x SPEAKER_RATES x SPEAKER_RANGES."""
    voice = resolve_language(code).voice
    return [Speaker(voice, variant, pitch, rate, rng)
            for variant in split_variants()[split]
            for pitch in SPEAKER_PITCHES for rate in SPEAKER_RATES for rng in SPEAKER_RANGES]


# ---------------------------------------------------------------------------------------------------------------
# Audio


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(num_samples,) float32 noise with a 1/f power spectrum and unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0  # keep DC finite; it is removed below anyway
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=num_samples)
    noise -= noise.mean()
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def speech_power(wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Mean power of the active part of `wav`: 20 ms frames within ACTIVE_FRAME_DB of the loudest frame, so that
    eSpeak's pauses do not lower the reference of the SNR."""
    frame = max(1, sr // 50)
    n = len(wav) // frame
    if n == 0:
        return float(np.mean(wav.astype(np.float64) ** 2))
    power = np.mean(wav[:n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)
    active = power[power >= power.max() * 10 ** (ACTIVE_FRAME_DB / 10)]
    return float(active.mean())


def add_noise(wav: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink noise at `snr_db` relative to speech_power(wav). (T,) float32 -> (T,) float32."""
    noise = pink_noise(len(wav), rng)
    scale = math.sqrt(speech_power(wav) / 10 ** (snr_db / 10))
    return (wav + scale * noise).astype(np.float32)


def telephone_channel(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Narrowband telephone: to 8 kHz, band-pass 300-3400 Hz, 8-bit mu-law, back to `sr`. (T,) -> (T,) float32."""
    from scipy.signal import butter, sosfilt

    narrow = resample(wav.astype(np.float32), sr, TELEPHONE_RATE)
    sos = butter(4, TELEPHONE_BAND, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    narrow = np.clip(sosfilt(sos, narrow), -1.0, 1.0)  # causal, like a real line
    companded = np.sign(narrow) * np.log1p(MU_LAW * np.abs(narrow)) / math.log1p(MU_LAW)
    code = np.round((companded + 1.0) * 127.5) / 127.5 - 1.0  # 256 levels
    narrow = np.sign(code) * np.expm1(np.abs(code) * math.log1p(MU_LAW)) / MU_LAW
    out = resample(narrow.astype(np.float32), TELEPHONE_RATE, sr)
    return out[:len(wav)] if len(out) >= len(wav) else np.pad(out, (0, len(wav) - len(out)))


def _render(job: _Job) -> float:
    """Synthesise, post-process and write one utterance; returns its duration in seconds, measured from the file."""
    samples, rate = espeak.synthesize(job.speak, job.voice, job.variant, rate=job.rate, pitch=job.pitch,
                                      pitch_range=job.pitch_range, seed=job.espeak_seed)
    wav = resample(samples, rate, SAMPLE_RATE)
    if job.noise_snr is not None:
        wav = add_noise(wav, job.noise_snr, np.random.default_rng(job.noise_seed))
    if job.telephone:
        wav = telephone_channel(wav)
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if peak > PEAK_LIMIT:
        wav = wav * (PEAK_LIMIT / peak)
    save_audio(job.path, wav, SAMPLE_RATE)
    sr, frames, _ = audio_info(job.path)
    return frames / sr


def _init_worker() -> None:
    espeak.sample_rate()  # each worker process loads and initialises its own eSpeak NG


# ---------------------------------------------------------------------------------------------------------------
# Corpus


def _jobs(code: str, words: list[str], split: str, seed: int, wav_dir: Path, noise_snr: float | None,
          telephone: bool):
    """Endless stream of (_Job, transcript, speaker id) for utterances 0, 1, 2, ... of (language, split)."""
    voices = speakers(code, split)
    seen: set[str] = set()
    for index in itertools.count():
        rng = _utterance_rng(seed, code, split, index)
        for _ in range(MAX_DRAWS):
            n = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
            sentence = " ".join(words[i] for i in rng.choice(len(words), size=n, replace=False))
            if sentence not in seen and _split_of(sentence, code) == split:
                break
        else:
            raise RuntimeError(f"{code}/{split}: no new sentence after {MAX_DRAWS} draws; the vocabulary "
                               f"({len(words)} words) is too small for the requested hours")
        seen.add(sentence)
        spk = voices[int(rng.integers(len(voices)))]
        rate = int(np.clip(spk.rate + rng.integers(-RATE_JITTER, RATE_JITTER + 1), *espeak.RATE_RANGE))
        pitch = int(np.clip(spk.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), *espeak.PITCH_RANGE))
        utt_id = f"{code}-{split}-{index:06d}"
        job = _Job(path=str(wav_dir / f"{utt_id}.wav"), speak=_speakable(sentence, code),
                   voice=spk.voice, variant=spk.variant, rate=rate, pitch=pitch, pitch_range=spk.pitch_range,
                   espeak_seed=int(rng.integers(2 ** 31)), noise_seed=int(rng.integers(2 ** 63)),
                   noise_snr=noise_snr, telephone=telephone)
        yield job, sentence, spk.id


def _generate_split(code: str, words: list[str], split: str, hours: float, seed: int, lang_dir: Path,
                    noise_snr: float | None, telephone: bool, pool, jobs: int, progress: bool) -> list[Utterance]:
    """Render utterances 0, 1, ... until their total duration reaches `hours`; the cut depends only on the
    durations in index order, so it is the same for any number of workers. Work goes out in batches sized from
    the mean duration so far; renders past the cut are deleted."""
    from xlingual.progress import progress as progress_display

    budget = hours * 3600.0
    wav_dir = lang_dir / "wav" / split
    shutil.rmtree(wav_dir, ignore_errors=True)  # files of an older config or a killed run
    wav_dir.mkdir(parents=True)
    stream = _jobs(code, words, split, seed, wav_dir, noise_snr, telephone)
    utts: list[Utterance] = []
    total = 0.0
    shown = 0  # whole audio seconds shown so far
    with progress_display(total=math.ceil(budget), unit="audio-s", desc=f"{code}/{split}", enabled=progress) as bar:
        while total < budget:
            mean = total / len(utts) if utts else DEFAULT_UTTERANCE_SECONDS
            size = max(4 * jobs, math.ceil((budget - total) / mean * 1.05))
            batch = list(itertools.islice(stream, size))
            if pool is None:
                durations = map(_render, (job for job, _, _ in batch))
            else:
                durations = pool.imap(_render, [job for job, _, _ in batch], chunksize=max(1, size // (8 * jobs)))
            for (job, text, speaker), duration in zip(batch, durations):  # consumes all: every write is done
                if total >= budget:
                    Path(job.path).unlink()
                    continue
                utts.append(Utterance(id=Path(job.path).stem, audio=job.path, text=text, language=code,
                                      speaker=speaker, duration=round(duration, 4)))
                total += utts[-1].duration  # the manifest's numbers, so its sum is what meets the budget
                step = min(math.ceil(budget), int(total)) - shown
                bar.update(step)
                shown += step
    return utts


def _config(code: str, entry: SyntheticLanguage, words: list[str], split: str, hours: float, seed: int,
            noise_snr: float | None, telephone: bool) -> dict:
    """What determines a split's output; its hash is stored in the completion marker."""
    import babel

    return {
        "format_version": FORMAT_VERSION, "language": code, "settings": asdict(entry), "split": split,
        "hours": hours, "seed": seed, "noise_snr": noise_snr, "telephone": telephone,
        "espeak_ng": espeak.version(), "babel": babel.__version__,
        "vocabulary_sha1": hashlib.sha1("\n".join(words).encode()).hexdigest(),
        "speakers_sha1": hashlib.sha1(json.dumps(split_variants()).encode()).hexdigest(),
    }


def _config_hash(config: dict) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _is_complete(marker: Path, manifest: Path, digest: str) -> bool:
    if not (marker.is_file() and manifest.is_file()):
        return False
    try:
        return read_json(marker).get("hash") == digest
    except (ValueError, OSError):
        return False  # unreadable marker: regenerate


def prepare_synthetic(output_dir, languages=DEFAULT_LANGUAGES, hours: dict[str, float] | None = None,
                      seed: int = 0, noise_snr: float | None = None, telephone: bool = False, jobs: int = 2,
                      progress: bool = True, overwrite: bool = True,
                      exclude_shared: tuple[str, ...] | list[str] = ()) -> dict[str, dict[str, Path]]:
    """Generate (or reuse) the synthetic corpus.

    Args:
        output_dir: where <lang>/<split>.jsonl, <lang>/wav/<split>/*.wav and the markers go.
        languages: language codes; see LANGUAGES, or any code both eSpeak NG and CLDR have.
        hours: audio hours per split, e.g. {"train": 0.5, "dev": 0.05, "test": 0.05} (the default); a split is
            filled until its total duration reaches the budget, so it overshoots by less than one utterance.
        seed: non-negative integer; the same seed and options give bit-identical output.
        noise_snr: add pink noise at this SNR in dB (None: clean).
        telephone: pass the audio through an 8 kHz telephone channel (band 300-3400 Hz, mu-law).
        jobs: worker processes for synthesis (1: in this process).
        progress: show a progress bar per split and print the synthesis speed.
        overwrite: regenerate a complete split made with other settings; False raises instead (what training
            commands use, so a config typo never silently replaces a corpus other experiments rely on).
        exclude_shared: languages whose shared word forms (shared_word_forms: spelling or pronunciation) are
            removed from every generated language's vocabulary; () = keep every word. The control corpus.
    Returns:
        {language: {split: manifest path}}.
    A split whose completion marker records the same configuration is skipped; otherwise it is regenerated from
    scratch (its old audio removed first). A killed run leaves no marker, so the next run redoes that split.
    """
    hours = dict(DEFAULT_HOURS if hours is None else hours)
    if isinstance(languages, str):
        languages = (languages,)
    if not languages:
        raise ValueError("no languages given; e.g. languages=('bn', 'as', 'th', 'tr')")
    unknown = sorted(set(hours) - set(SPLITS))
    if unknown or not hours:
        raise ValueError(f"hours must map splits {list(SPLITS)} to budgets, got {hours}")
    for split, h in hours.items():
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not h > 0:
            raise ValueError(f"hours[{split!r}] must be a positive number, got {h!r} (omit a split to skip it)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if noise_snr is not None and not (isinstance(noise_snr, (int, float)) and math.isfinite(noise_snr)):
        raise ValueError(f"noise_snr must be a number of dB or None, got {noise_snr!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    noise_snr = None if noise_snr is None else float(noise_snr)
    entries = {code: resolve_language(code) for code in languages}  # fail early, before any work

    output_dir = Path(output_dir)
    manifests: dict[str, dict[str, Path]] = {}
    exclude_shared = tuple(sorted(set(exclude_shared)))
    shared = shared_word_forms(tuple(sorted(set(exclude_shared) | set(languages)))) if exclude_shared else {}
    pool = None
    generated_seconds, generating_wall = 0.0, 0.0
    try:
        for code, entry in entries.items():
            lang_dir = output_dir / code
            words = vocabulary(code)
            if exclude_shared:  # the control corpus: no word that another of the languages spells or says alike
                words = [w for w in words if w not in shared[code]]
                if len(words) < MIN_VOCABULARY:
                    raise ValueError(f"{code}: only {len(words)} words are not shared with {exclude_shared}; "
                                     f"need {MIN_VOCABULARY}")
            manifests[code] = {}
            for split in (s for s in SPLITS if s in hours):
                manifest = lang_dir / f"{split}.jsonl"
                marker = lang_dir / f"{split}.done.json"
                config = _config(code, entry, words, split, float(hours[split]), seed, noise_snr, telephone)
                digest = _config_hash(config)
                manifests[code][split] = manifest
                if _is_complete(marker, manifest, digest):
                    if progress:
                        print(f"synthetic: {code}/{split} is up to date ({manifest})")
                    continue
                if not overwrite and marker.is_file() and manifest.is_file():
                    old = read_json(marker).get("config", {})
                    diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                    raise ValueError(f"{lang_dir}/{split} was generated with other settings (differing: {diff}; "
                                     f"on disk: { {k: old.get(k) for k in diff if k != 'words'} }); use the "
                                     f"settings it was made with, another corpus.dir, or `xlingual prepare "
                                     f"synthetic` to regenerate it")
                marker.unlink(missing_ok=True)  # first: a run killed from here on must not look complete
                if pool is None and jobs > 1:
                    # spawn, not fork: workers start clean and load their own eSpeak NG
                    pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_init_worker)
                start = time.perf_counter()
                utts = _generate_split(code, words, split, float(hours[split]), seed, lang_dir, noise_snr,
                                       telephone, pool, jobs, progress)
                write_manifest(manifest, utts)
                generating_wall += time.perf_counter() - start
                seconds = sum(u.duration for u in utts)
                generated_seconds += seconds
                write_json(marker, {"hash": digest, "config": config, "utterances": len(utts),
                                    "hours": round(seconds / 3600.0, 4),
                                    "speakers": len({u.speaker for u in utts})})
        if pool is not None:
            pool.close()
    finally:
        if pool is not None:
            pool.terminate()  # no-op after close() once the work is done; stops workers on an error
            pool.join()
    if generated_seconds and progress:
        print(f"synthetic: {generated_seconds / 3600:.3f} h of audio in {generating_wall:.1f} s "
              f"({generated_seconds / generating_wall:.0f} audio-s per wall-s, jobs={jobs})")
    return manifests
