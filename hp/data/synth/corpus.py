"""The mini corpus writers: an SV tree in VoxCeleb's layout and a CM tree in ASVspoof5's, drawn from the speech
model, attacks and channels, so that the mini corpus goes through the same adapters as the real ones."""
# The synthesiser (streams, speech, attacks, channels) is imported inside the functions that draw: a params check
# reads only the writers' signatures (the report stage's, say), and then neither imports nor depends on it.
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import combinations
from pathlib import Path

import numpy as np
import soundfile as sf

from hp.data.asvspoof import FORMATS
from hp.data.audio import SAMPLE_RATE
from hp.utils.files import atomic_dir

CM_FORMAT = FORMATS["asvspoof5"]
CODED_EVERY = 3  # every third bona fide and every third spoof of a split passes through a codec-like channel
SV_DIRS = {"train": "voxceleb2", "test": "voxceleb1"}
CM_PREFIXES = {"train": "T", "dev": "D", "eval": "E"}  # of speaker ids and file names, as in ASVspoof5


def _check_counts(**counts: tuple[int, int]) -> None:
    """name=(value, least allowed value)."""
    for name, (value, least) in counts.items():
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")


def _check_seconds(min_seconds: float, max_seconds: float) -> None:
    if not 0.5 <= min_seconds <= max_seconds:
        raise ValueError(f"need 0.5 <= min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")


def _parallel(fn, items: list, workers: int | None) -> list:
    """[fn(item) for item in items] on `workers` threads (None: one per CPU this process may use); numpy's FFTs and
    array arithmetic and libsndfile release the GIL, so threads share the work. Every file's audio depends only on
    its own random stream (hp.data.synth.streams), so the corpus is the same for any number of workers."""
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _write_sv_utterance(wav_dir: Path, seed: int, split_code: int, min_seconds: float, max_seconds: float,
                        item: tuple[str, int, int, int]) -> float:
    """Write utterance k of session j of speaker s of a split; returns its length in seconds."""
    from hp.data.synth.speech import peak_normalise, recording_session, speaker_voice, synthesize
    from hp.data.synth.streams import SESSION, SPEAKER, SV, UTTERANCE, stream

    utt, s, j, k = item
    voice = speaker_voice(stream(seed, SV, SPEAKER, split_code, s))
    session = recording_session(stream(seed, SV, SESSION, split_code, s, j))
    rng = stream(seed, SV, UTTERANCE, split_code, s, j, k)
    duration = rng.uniform(min_seconds, max_seconds)
    wave = peak_normalise(rng, synthesize(rng, voice, session, duration).wave)
    sf.write(wav_dir / utt, wave, SAMPLE_RATE, subtype="PCM_16")
    return len(wave) / SAMPLE_RATE


def _write_sv_split(wav_dir: Path, seed: int, split_code: int, first_id: int, speakers: int, sessions: int,
                    utterances_per_session: int, min_seconds: float, max_seconds: float,
                    workers: int | None = None) -> list[tuple[str, float]]:
    """Write one split's <spk>/<session>/<NNNNN>.wav files; returns (relative path, seconds) per utterance."""
    items = [(f"id{first_id + s:05d}/s{j + 1:04d}/{k + 1:05d}.wav", s, j, k)
             for s in range(speakers) for j in range(sessions) for k in range(utterances_per_session)]
    for utt, *_ in items:
        (wav_dir / utt).parent.mkdir(parents=True, exist_ok=True)
    seconds = _parallel(partial(_write_sv_utterance, wav_dir, seed, split_code, min_seconds, max_seconds), items,
                        workers)
    return [(utt, length) for (utt, *_), length in zip(items, seconds)]


def sv_trial_list(utterances: list[str], nontarget: int | None,
                  rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """(label, enroll, test) for every pair of distinct `utterances` ("<speaker>/<session>/<file>") of one speaker,
    and `nontarget` pairs of two speakers drawn without replacement (None, or more than there are: all of them), in
    the order of the pairs."""
    pairs = [(int(a.split("/")[0] == b.split("/")[0]), a, b) for a, b in combinations(utterances, 2)]
    different = [i for i, (label, _, _) in enumerate(pairs) if not label]
    if nontarget is not None and nontarget < len(different):
        dropped = set(np.asarray(different)[rng.permutation(len(different))[nontarget:]].tolist())
        pairs = [pair for i, pair in enumerate(pairs) if i not in dropped]
    return pairs


def write_sv_corpus(root: Path, seed: int = 0, train_speakers: int = 24, test_speakers: int = 8,
                    sessions: int = 2, utterances_per_session: int = 3, test_sessions: int | None = None,
                    test_utterances_per_session: int | None = None, nontarget_trials: int | None = None,
                    min_seconds: float = 2.0, max_seconds: float = 4.0, workers: int | None = None) -> dict:
    """SV corpus in VoxCeleb's layout, so that it goes through the same adapters as the real one.

    root/voxceleb2/wav/<spk>/<session>/<NNNNN>.wav  training speakers (id00001...; as VoxCeleb2-dev in wav)
    root/voxceleb1/wav/<spk>/<session>/<NNNNN>.wav  disjoint test speakers (id10001...; as VoxCeleb1)
    root/voxceleb1/veri_test2.txt  the trial list, "<1|0> <enroll> <test>", paths relative to voxceleb1/wav (the
                                   Vox1-O list's format): every pair of distinct utterances of one test speaker,
                                   and `nontarget_trials` pairs of two speakers drawn without replacement (None, or
                                   more than there are: every such pair), in the order of the utterances.
    Sessions are s0001..., utterances 00001... within a session; a test speaker has `test_sessions` x
    `test_utterances_per_session` of them (None: as a training speaker). Test audio costs only an embedding pass,
    so the test set can be large enough to resolve differences between runs while training stays short.
    `workers`: threads writing audio (None: every CPU); it changes nothing in the corpus.
    Returns counts of speakers, utterances and seconds per split, and of target / non-target trials."""
    from hp.data.synth.streams import SV, TRIALS, stream

    test_sessions = sessions if test_sessions is None else test_sessions
    test_utterances_per_session = utterances_per_session if test_utterances_per_session is None \
        else test_utterances_per_session
    _check_counts(train_speakers=(train_speakers, 1), test_speakers=(test_speakers, 2), sessions=(sessions, 1),
                  utterances_per_session=(utterances_per_session, 1), test_sessions=(test_sessions, 1),
                  test_utterances_per_session=(test_utterances_per_session, 1),
                  test_utterances_per_speaker=(test_sessions * test_utterances_per_session, 2),
                  nontarget_trials=(1 if nontarget_trials is None else nontarget_trials, 1))
    _check_seconds(min_seconds, max_seconds)
    summary, written = {}, {}
    with atomic_dir(root) as tree:
        for split_code, (split, first_id, speakers, n_sessions, per_session) in enumerate((
                ("train", 1, train_speakers, sessions, utterances_per_session),
                ("test", 10001, test_speakers, test_sessions, test_utterances_per_session))):
            written[split] = _write_sv_split(tree / SV_DIRS[split] / "wav", seed, split_code, first_id, speakers,
                                             n_sessions, per_session, min_seconds, max_seconds, workers)
            summary[split] = {"speakers": speakers, "utterances": len(written[split]),
                              "seconds": round(sum(seconds for _, seconds in written[split]), 2)}
        trials = sv_trial_list([utt for utt, _ in written["test"]], nontarget_trials, stream(seed, SV, TRIALS))
        (tree / "voxceleb1" / "veri_test2.txt").write_text("".join(f"{label} {a} {b}\n" for label, a, b in trials))
    target = sum(label for label, _, _ in trials)
    summary["trials"] = {"target": target, "nontarget": len(trials) - target}
    return summary


def _write_cm_utterance(audio: Path, seed: int, min_seconds: float, max_seconds: float,
                        item: tuple[str, int, str, int, str | None, int | None]) -> float:
    """Write one CM file: utterance k of speaker s, bona fide or spoofed by attack `label`, coded or not; returns
    its length in seconds."""
    from hp.data.synth.attacks import CM_SPOOFERS
    from hp.data.synth.channels import CM_CODECS, codec_channel
    from hp.data.synth.speech import peak_normalise, recording_session, speaker_voice, synthesize
    from hp.data.synth.streams import CM, SPEAKER, cm_role, stream

    name, s, label, k, codec, quality = item
    rng = stream(seed, CM, cm_role(label), s, k)
    session = recording_session(rng)
    utterance = synthesize(rng, speaker_voice(stream(seed, CM, SPEAKER, s)), session,
                           rng.uniform(min_seconds, max_seconds))
    wave = utterance.wave if label == "bonafide" else CM_SPOOFERS[label](rng, utterance)
    if codec is not None:
        wave = codec_channel(wave, CM_CODECS[codec][quality])
    sf.write(audio / f"{name}.flac", peak_normalise(rng, wave), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return len(wave) / SAMPLE_RATE


def write_cm_corpus(root: Path, seed: int = 1, train_speakers: int = 12, test_speakers: int = 6,
                    bonafide_per_speaker: int = 6, spoofed_per_speaker: int = 6,
                    test_bonafide_per_speaker: int | None = None, test_spoofed_per_speaker: int | None = None,
                    min_seconds: float = 2.0, max_seconds: float = 4.0, workers: int | None = None) -> dict:
    """ASVspoof5-shaped CM corpus.

    root/{flac_T,flac_D,flac_E_eval}/<FLAC_FILE_NAME>.flac  16 kHz FLAC (the release's layout)
    root/ASVspoof5_protocols/ASVspoof5.{train,dev.track_1,eval.track_1}.tsv, space separated, no header:
      SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    `train_speakers` train, then `test_speakers` dev and as many eval speakers (ids T_0001, D_0001, E_0001...; files
    T_0000000001..., numbered in a random order); a speaker's voice is drawn from its index in that order, so adding
    test speakers leaves the training audio as it was. Every bona fide utterance is its own session; spoofs cycle
    through the split's attacks (CM_SPLIT_ATTACKS: A01, A02 in train; dev adds A17, eval A17 and A18), each
    re-synthesising a fresh (unwritten) bona fide utterance of the same speaker. Every third bona fide and every
    third spoof of a split is coded (CM_CODECS, cycling through C01-C03, the quality CODEC_Q drawn per file);
    CODEC_SEED, in ASVspoof5 the uncoded utterance a coded one was made from, is the file's own name (it is coded in
    place, its only version), and all three are '-' for uncoded files. A dev or eval speaker has
    `test_bonafide_per_speaker` and `test_spoofed_per_speaker` utterances (None: as a training speaker): test audio
    costs only an embedding pass, so dev and eval can be large enough to resolve differences between runs while
    training stays short.
    `workers`: threads writing audio (None: every CPU); it changes nothing in the corpus.
    Returns bona fide and spoof counts, seconds, and utterances per attack and per codec, per split."""
    from hp.data.synth.attacks import CM_ATTACKS, CM_SPLIT_ATTACKS
    from hp.data.synth.channels import CM_CODECS
    from hp.data.synth.speech import speaker_voice
    from hp.data.synth.streams import CM, CODEC, ORDER, SPEAKER, cm_role, stream

    test_bonafide = bonafide_per_speaker if test_bonafide_per_speaker is None else test_bonafide_per_speaker
    test_spoofed = spoofed_per_speaker if test_spoofed_per_speaker is None else test_spoofed_per_speaker
    _check_counts(train_speakers=(train_speakers, 1), test_speakers=(test_speakers, 1),
                  bonafide_per_speaker=(bonafide_per_speaker, 1),
                  spoofed_per_speaker=(spoofed_per_speaker, len(CM_SPLIT_ATTACKS["train"])),
                  test_bonafide_per_speaker=(test_bonafide, 1), test_spoofed_per_speaker=(test_spoofed, 1))
    _check_seconds(min_seconds, max_seconds)
    split_speakers = np.split(np.arange(train_speakers + 2 * test_speakers),
                              [train_speakers, train_speakers + test_speakers])
    codecs = list(CM_CODECS)
    summary: dict = {}
    with atomic_dir(root) as tree:
        (tree / CM_FORMAT.protocol_dirs[0]).mkdir()
        for split_code, ((split, prefix), members) in enumerate(zip(CM_PREFIXES.items(), split_speakers)):
            audio = tree / CM_FORMAT.audio_dirs[split]
            audio.mkdir()
            attacks = CM_SPLIT_ATTACKS[split]
            # (speaker number within the split, speaker index, label, index, codec); attacks cycle within the split,
            # codecs too (every CODED_EVERY-th utterance of each class, counted across the split)
            items = []
            per_speaker = {"bonafide": bonafide_per_speaker, "spoof": spoofed_per_speaker} if split == "train" \
                else {"bonafide": test_bonafide, "spoof": test_spoofed}
            for n, s in enumerate(members, 1):
                for key, count in per_speaker.items():
                    for k in range(count):
                        j = (n - 1) * count + k  # the utterance's place among its class in the split
                        label = key if key == "bonafide" else attacks[j % len(attacks)]
                        coded = j % CODED_EVERY == CODED_EVERY - 1
                        items.append((n, s, label, k, codecs[j // CODED_EVERY % len(codecs)] if coded else None))
            order = stream(seed, CM, ORDER, split_code).permutation(len(items))
            voices = {s: speaker_voice(stream(seed, CM, SPEAKER, s)) for s in members}
            lines, counts = [], {"speakers": len(members), "bonafide": 0, "spoof": 0, "seconds": 0.0}
            per = {"attacks": dict.fromkeys(attacks, 0), "codecs": dict.fromkeys(["-", *codecs], 0)}
            files = []  # (file name, speaker index, label, index, codec, its quality)
            for number, i in enumerate(order, 1):
                n, s, label, k, codec = items[i]
                name, key = f"{prefix}_{number:010d}", "bonafide" if label == "bonafide" else "spoof"
                quality = None if codec is None else int(
                    stream(seed, CM, CODEC, cm_role(label), s, k).choice(list(CM_CODECS[codec])))
                files.append((name, s, label, k, codec, quality))
                coding = "- - -" if codec is None else f"{codec} {quality} {name}"
                tag = "-" if key == "bonafide" else CM_ATTACKS[label]
                lines.append(f"{prefix}_{n:04d} {name} {voices[s].gender} {coding} {tag} {label} {key} -\n")
                counts[key] += 1
                if key == "spoof":
                    per["attacks"][label] += 1
                per["codecs"][codec or "-"] += 1
            counts["seconds"] = sum(_parallel(partial(_write_cm_utterance, audio, seed, min_seconds, max_seconds),
                                              files, workers))
            (tree / CM_FORMAT.protocol_dirs[0] / CM_FORMAT.protocols[split]).write_text("".join(lines))
            summary[split] = {**counts, "seconds": round(counts["seconds"], 2), **per}
    return summary
