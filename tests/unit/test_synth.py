"""The built-in mini corpus: layout, formats, determinism, atomic writing, and that both tasks carry signal."""
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hp.data import synth

SV_ARGS = dict(train_speakers=4, test_speakers=3, sessions=2, utterances_per_session=2, min_seconds=1.0,
               max_seconds=2.0)
CM_ARGS = dict(train_speakers=2, test_speakers=2, bonafide_per_speaker=4, spoofed_per_speaker=4, min_seconds=1.0,
               max_seconds=2.0)
PROTOCOLS = {"train": "ASVspoof5.train.tsv", "dev": "ASVspoof5.dev.track_1.tsv", "eval": "ASVspoof5.eval.track_1.tsv"}
AUDIO = {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}  # the release's directories
TRIAL = re.compile(r"^([01]) (id\d{5})/s\d{4}/\d{5}\.wav (id\d{5})/s\d{4}/\d{5}\.wav$")


@pytest.fixture(scope="module")
def sv(tmp_path_factory):
    root = tmp_path_factory.mktemp("sv") / "corpus"
    return root, synth.write_sv_corpus(root, seed=3, **SV_ARGS)


@pytest.fixture(scope="module")
def cm(tmp_path_factory):
    root = tmp_path_factory.mktemp("cm") / "corpus"
    return root, synth.write_cm_corpus(root, seed=4, **CM_ARGS)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def protocol(root: Path, split: str) -> list[list[str]]:
    return [line.split(" ") for line in (root / "ASVspoof5_protocols" / PROTOCOLS[split]).read_text().splitlines()]


def check_audio(path: Path, min_seconds: float, max_seconds: float) -> np.ndarray:
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (synth.SAMPLE_RATE, 1, "PCM_16"), path
    assert min_seconds <= info.duration <= max_seconds + 1 / synth.SAMPLE_RATE, path
    wave = sf.read(path, dtype="int16")[0]
    assert 0.45 * 32767 <= np.abs(wave.astype(int)).max() <= 0.91 * 32767, path  # peak-normalised, never clipped
    return wave / 32768.0


def log_spectrum(wave: np.ndarray) -> np.ndarray:
    """Mean log power spectrum over the frames within 30 dB of the loudest."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames)) ** 2
    energy = power.sum(axis=1)
    return np.log(power[energy > 1e-3 * energy.max()] + 1e-10).mean(axis=0)


def band_levels(wave: np.ndarray) -> np.ndarray:
    """Spectral envelope: mean log energy in 22 mel bands (100 Hz - 7 kHz) over the loud frames, level removed."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames)) ** 2
    energy = power.sum(axis=1)
    levels = np.log(power[energy > 1e-3 * energy.max()] @ synth.band_filters(24, 512).T).mean(axis=0)[1:-1]
    return levels - levels.mean()


def spoof_features(wave: np.ndarray) -> np.ndarray:
    """Two numbers the vocoders disturb, in opposite directions. Spectral flux: how much the log magnitude below
    5 kHz changes from one 8 ms frame to the next in voiced frames (random phase makes it fluctuate; a clean pulse
    excitation under smooth band gains keeps it steadier than a jittery, breathy voice). Peakiness: kurtosis of
    the differentiated waveform in 32 ms frames (random phase spreads the glottal pulses; the vocoder's are sharper)."""
    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::128]
    spec = np.abs(np.fft.rfft(frames * np.hanning(512)))[:, :160]
    energy, low = (spec ** 2).sum(axis=1), (spec[:, :32] ** 2).sum(axis=1)
    voiced = (energy > 1e-2 * energy.max()) & (low > 0.5 * energy)
    pairs = voiced[1:] & voiced[:-1]
    change = np.abs(np.diff(np.log(spec + 1e-9), axis=0))[pairs]
    weight = np.sqrt(spec[1:] * spec[:-1])[pairs]
    flux = (change * weight).sum() / weight.sum()
    frames = np.lib.stride_tricks.sliding_window_view(np.diff(wave), 512)[::128]
    power = (frames ** 2).mean(axis=1)
    loud = frames[power > 1e-2 * power.max()]
    kurtosis = np.log((loud ** 4).mean(axis=1) / (loud ** 2).mean(axis=1) ** 2).mean()
    return np.array([flux, kurtosis])


def speaker_margin(features: np.ndarray, speakers: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> float:
    """Mean cosine of same-speaker pairs minus that of different-speaker pairs (features centred on their mean),
    over pairs (i, j), i != j, with rows[i] and columns[j]."""
    x = features - features.mean(axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = rows[:, None] & columns[None, :] & ~np.eye(len(x), dtype=bool)
    same = speakers[:, None] == speakers[None, :]
    cosine = x @ x.T
    return cosine[pairs & same].mean() - cosine[pairs & ~same].mean()


def test_sv_layout_audio_and_summary(sv):
    root, summary = sv
    speakers = {}
    for split, count in (("train", SV_ARGS["train_speakers"]), ("test", SV_ARGS["test_speakers"])):
        wav_dir = root / synth.SV_DIRS[split] / "wav"
        files = sorted(wav_dir.rglob("*"))
        wavs = [f for f in files if f.is_file()]
        assert all(re.fullmatch(r"id\d{5}/s\d{4}/\d{5}\.wav", f.relative_to(wav_dir).as_posix())
                   for f in wavs)
        speakers[split] = {f.parent.parent.name for f in wavs}
        assert len(speakers[split]) == count
        assert len(wavs) == count * SV_ARGS["sessions"] * SV_ARGS["utterances_per_session"]
        seconds = sum(len(check_audio(f, 1.0, 2.0)) / synth.SAMPLE_RATE for f in wavs)
        assert summary[split] == {"speakers": count, "utterances": len(wavs),
                                  "seconds": pytest.approx(seconds, abs=0.01)}
    assert not speakers["train"] & speakers["test"]
    assert {p.name for p in root.iterdir()} == {"voxceleb1", "voxceleb2"}
    assert {p.name for p in root.parent.iterdir()} == {"corpus"}  # no temporary directories left behind


def test_trials(sv):
    root, summary = sv
    wav = root / "voxceleb1" / "wav"
    lines = (root / "voxceleb1" / "veri_test2.txt").read_text().splitlines()
    utts = sorted(p.relative_to(wav).as_posix() for p in wav.rglob("*.wav"))
    assert len(lines) == len(utts) * (len(utts) - 1) // 2  # every pair of distinct utterances once
    pairs = set()
    for line in lines:
        m = TRIAL.match(line)
        assert m, line
        label, enroll, test = line.split(" ")
        assert enroll != test and (wav / enroll).is_file() and (wav / test).is_file()
        assert int(label) == (m[2] == m[3])
        pairs.add(frozenset((enroll, test)))
    assert pairs == {frozenset(p) for p in combinations(utts, 2)}
    target = sum(line.startswith("1") for line in lines)
    assert summary["trials"] == {"target": target, "nontarget": len(lines) - target} and 0 < target < len(lines)


def test_cm_protocols_and_audio(cm):
    root, summary = cm
    speakers, names = {}, set()
    for split, prefix in (("train", "T"), ("dev", "D"), ("eval", "E")):
        rows = protocol(root, split)
        assert all(len(r) == 10 for r in rows)
        for spk, name, gender, codec, codec_q, codec_seed, tag, label, key, tmp in rows:
            assert re.fullmatch(rf"{prefix}_\d{{4}}", spk) and re.fullmatch(rf"{prefix}_\d{{10}}", name)
            assert gender in ("M", "F") and tmp == "-"
            if codec == "-":
                assert codec_q == codec_seed == "-"
            else:  # CODEC_SEED: the uncoded source, here the file itself (coded in place)
                assert int(codec_q) in synth.CM_CODECS[codec] and codec_seed == name
            if key == "bonafide":
                assert (tag, label) == ("-", "bonafide")
            else:
                assert key == "spoof" and tag == synth.CM_ATTACKS[label] and re.fullmatch(r"AC\d", tag)
            check_audio(root / AUDIO[split] / f"{name}.flac", 1.0, 2.0)
        speakers[split] = {r[0] for r in rows}
        names |= {r[1] for r in rows}
        keys = [r[8] for r in rows]
        assert {r[7] for r in rows} == {"bonafide", *synth.CM_SPLIT_ATTACKS[split]}  # every attack of the split
        assert summary[split]["attacks"] == {a: sum(r[7] == a for r in rows) for a in synth.CM_SPLIT_ATTACKS[split]}
        assert keys.count("bonafide") == len(speakers[split]) * CM_ARGS["bonafide_per_speaker"]
        assert keys.count("spoof") == len(speakers[split]) * CM_ARGS["spoofed_per_speaker"]
        assert summary[split]["bonafide"] == keys.count("bonafide") and summary[split]["spoof"] == keys.count("spoof")
        assert all(len({r[2] for r in rows if r[0] == spk}) == 1 for spk in speakers[split])  # one gender each
    assert [len(speakers[split]) for split in ("train", "dev", "eval")] == [2, 2, 2]
    assert {p.stem for d in AUDIO.values() for p in (root / d).iterdir()} == names


@pytest.mark.parametrize("task", ["sv", "cm"])
def test_deterministic(task, sv, cm, tmp_path):
    """The same seed gives the same bytes, on one thread or three (the fixtures used every CPU); another seed
    changes every audio file."""
    (root, _), write, args, seed = {"sv": (sv, synth.write_sv_corpus, SV_ARGS, 3),
                                    "cm": (cm, synth.write_cm_corpus, CM_ARGS, 4)}[task]
    first = tree_bytes(root)
    assert write(tmp_path / "serial", seed=seed, workers=1, **args) == write(tmp_path / "again", seed=seed, workers=3,
                                                                             **args)
    assert tree_bytes(tmp_path / "serial") == first and tree_bytes(tmp_path / "again") == first
    write(tmp_path / "other", seed=seed + 1, **args)
    other = tree_bytes(tmp_path / "other")
    assert all(other[name] != first.get(name) for name in other if name.endswith((".wav", ".flac")))


def test_replaces_root_only_when_complete(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "stale.txt").write_text("old")
    calls = []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("crash")
        return real(*args)

    real = synth.synthesize
    monkeypatch.setattr(synth.speech, "synthesize", crash_on_third)  # the writers look it up there as they draw
    with pytest.raises(RuntimeError):
        synth.write_sv_corpus(root, train_speakers=2, test_speakers=2, min_seconds=1.0, max_seconds=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"] and [p.name for p in root.iterdir()] == ["stale.txt"]
    monkeypatch.undo()
    synth.write_sv_corpus(root, train_speakers=1, test_speakers=2, sessions=1, utterances_per_session=2,
                          min_seconds=1.0, max_seconds=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"] and not (root / "stale.txt").exists()
    assert (root / "voxceleb1" / "veri_test2.txt").read_text().count("\n") == 6


@pytest.mark.parametrize("writer, args", [
    (synth.write_sv_corpus, dict(test_speakers=1)),
    (synth.write_sv_corpus, dict(sessions=1, utterances_per_session=1)),
    (synth.write_sv_corpus, dict(min_seconds=3.0, max_seconds=2.0)),
    (synth.write_sv_corpus, dict(test_sessions=1, test_utterances_per_session=1)),
    (synth.write_sv_corpus, dict(nontarget_trials=0)),
    (synth.write_cm_corpus, dict(test_bonafide_per_speaker=0)),
    (synth.write_cm_corpus, dict(test_speakers=0)),
    (synth.write_cm_corpus, dict(spoofed_per_speaker=1)),
    (synth.write_cm_corpus, dict(min_seconds=0.0)),
])
def test_rejects_bad_sizes(tmp_path, writer, args):
    with pytest.raises(ValueError):
        writer(tmp_path / "corpus", **args)
    assert not any(tmp_path.iterdir())


def test_same_speaker_sounds_alike(sv):
    """Mean log spectra: same-speaker pairs clearly more similar than different-speaker pairs."""
    root, _ = sv
    files = sorted(root.rglob("*.wav"))
    features = np.stack([log_spectrum(sf.read(f)[0]) for f in files])
    everyone = np.ones(len(files), dtype=bool)
    assert speaker_margin(features, np.array([f.parent.parent.name for f in files]), everyone, everyone) > 0.15


def test_spoofs_are_detectable_and_keep_the_voice(cm):
    """Nearest centroid (bona fide, A01, A02) on the standardised spoof_features, leaving one speaker out at a time,
    tells spoof from bona fide; and a spoof's spectral envelope is nearer its own speaker's bona fide ones (the
    uncoded utterances of the attacks every split has)."""
    root, _ = cm
    rows = [(split, r) for split in PROTOCOLS for r in protocol(root, split)
            if r[3] == "-" and r[7] in ("bonafide", "A01", "A02")]
    waves = [sf.read(root / AUDIO[split] / f"{r[1]}.flac")[0] for split, r in rows]
    rows = [r for _, r in rows]
    x = np.stack([spoof_features(w) for w in waves])
    speakers, labels = np.array([r[0] for r in rows]), np.array([r[7] for r in rows])
    names = np.array(["bonafide", "A01", "A02"])
    correct = 0
    for speaker in set(speakers):
        fit = speakers != speaker
        mean, std = x[fit].mean(axis=0), x[fit].std(axis=0)
        centroids = np.stack([((x[fit & (labels == n)] - mean) / std).mean(axis=0) for n in names])
        distance = np.linalg.norm(((x[~fit] - mean) / std)[:, None] - centroids[None], axis=2)
        correct += ((names[distance.argmin(axis=1)] == "bonafide") == (labels[~fit] == "bonafide")).sum()
    assert correct / len(rows) > 0.7

    spoof = labels != "bonafide"
    assert speaker_margin(np.stack([band_levels(w) for w in waves]), speakers, spoof, ~spoof) > 0.03


def test_eval_holds_attacks_that_training_and_dev_never_saw(cm):
    """As in ASVspoof5: dev holds an attack training lacks, eval one that neither training nor dev carries
    (synth.CM_SPLIT_ATTACKS), in ASVspoof5's naming (ATTACK_LABEL Ann, its ATTACK_TAG ACn)."""
    root, _ = cm
    attacks = {split: {r[7] for r in protocol(root, split) if r[8] == "spoof"} for split in PROTOCOLS}
    assert attacks["train"] == {"A01", "A02"} and attacks["dev"] == {"A01", "A02", "A17"}
    assert attacks["eval"] - attacks["train"] - attacks["dev"] == {"A18"}
    assert attacks["eval"] - attacks["train"] == {"A17", "A18"} and attacks["eval"] >= attacks["dev"]
    assert all(re.fullmatch(r"A\d\d", a) and re.fullmatch(r"AC\d", synth.CM_ATTACKS[a]) for a in attacks["eval"])
    # any eval split with the fewest spoofs allowed (2 per speaker, 1 speaker) still holds an unseen attack
    assert set(synth.CM_SPLIT_ATTACKS["eval"][:2]) - set(synth.CM_SPLIT_ATTACKS["train"])


def test_codecs_fill_their_columns_in_every_split_and_change_the_audio(cm):
    """Every third bona fide and every third spoof of each split is coded (CODEC, CODEC_Q, CODEC_SEED filled);
    read back from the FLAC, a band-limited file has ~no energy outside its band and a quantised one at most
    2 ** bits distinct sample values, where an uncoded file has thousands."""
    root, summary = cm
    checked = set()
    for split in PROTOCOLS:
        rows = protocol(root, split)
        for key in ("bonafide", "spoof"):
            of_class = [r for r in rows if r[8] == key]
            coded = [r for r in of_class if r[3] != "-"]
            assert len(coded) == len(of_class) // synth.CODED_EVERY > 0, (split, key)
        assert summary[split]["codecs"] == {c: sum(r[3] == c for r in rows) for c in ["-", *synth.CM_CODECS]}
        for r in rows:
            wave = sf.read(root / AUDIO[split] / f"{r[1]}.flac", dtype="int16")[0].astype(float)
            levels = len(np.unique(wave))
            if r[3] == "-":
                assert levels > 1000, r
                continue
            channel = synth.CM_CODECS[r[3]][int(r[4])]
            if channel.bits is not None:
                assert levels <= 2 ** channel.bits, r
                checked.add("levels")
            else:
                power = np.abs(np.fft.rfft(wave)) ** 2
                freqs = np.fft.rfftfreq(len(wave), 1 / synth.SAMPLE_RATE)
                outside = (freqs > channel.high_hz) | (freqs < channel.low_hz)
                assert power[outside].sum() < 1e-6 * power.sum() and outside.any(), r
                checked.add("band")
    assert checked == {"levels", "band"}


def test_codec_channels():
    """Each channel of CM_CODECS on one utterance: same length, audibly changed; band limiting leaves nothing
    outside the band (the input had plenty there); quantisation leaves at most 2 ** bits levels, mu-law ones
    finer near zero than coarse linear ones."""
    rng = synth.stream(0, 99)
    voice = synth.speaker_voice(rng)
    wave = synth.synthesize(rng, voice, synth.recording_session(rng), 1.5).wave
    wave /= np.abs(wave).max()
    freqs = np.fft.rfftfreq(len(wave), 1 / synth.SAMPLE_RATE)
    power_in = np.abs(np.fft.rfft(wave)) ** 2
    for codec, qualities in synth.CM_CODECS.items():
        assert re.fullmatch(r"C\d\d", codec) and sorted(qualities) == list(range(1, len(qualities) + 1))
        for quality, channel in qualities.items():
            out = synth.codec_channel(wave, channel)
            assert out.shape == wave.shape and np.isfinite(out).all()
            assert np.mean((out / np.abs(out).max() - wave) ** 2) > 1e-6 * np.mean(wave ** 2), (codec, quality)
            np.testing.assert_array_equal(out, synth.codec_channel(wave, channel))  # deterministic
            outside = (freqs > channel.high_hz) | (freqs < channel.low_hz)
            if channel.bits is None:
                power = np.abs(np.fft.rfft(out)) ** 2
                assert power[outside].sum() < 1e-12 * power.sum() < power_in[outside].sum(), (codec, quality)
            else:
                values = np.unique(out)
                assert len(values) <= 2 ** channel.bits
                smallest = np.abs(values).min()
                assert smallest <= (0.1 if channel.mu else 1.0) * 2 ** -channel.bits, (codec, quality)


def test_unseen_attacks_are_closer_to_bona_fide_than_the_seen_ones():
    """The eval-only attacks are built to be harder: on the standardised spoof_features their spoofs lie nearer
    the bona fide centroid than A01's and A02's, and re-synthesise the utterance's long-term spectrum at least as
    faithfully as A02 does."""
    features, spectra = {name: [] for name in ["bonafide", *synth.CM_SPOOFERS]}, {a: [] for a in synth.CM_SPOOFERS}
    for s in range(6):
        voice = synth.speaker_voice(synth.stream(7, s))
        for k in range(2):
            rng = synth.stream(7, s, k)
            utterance = synth.synthesize(rng, voice, synth.recording_session(rng), 2.0)
            reference = log_spectrum(utterance.wave / np.abs(utterance.wave).max())
            features["bonafide"].append(spoof_features(utterance.wave / np.abs(utterance.wave).max()))
            for attack, spoof in synth.CM_SPOOFERS.items():
                wave = spoof(synth.stream(8, s, k), utterance)
                wave /= np.abs(wave).max()
                features[attack].append(spoof_features(wave))
                difference = (log_spectrum(wave) - reference)[:200]
                spectra[attack].append(np.abs(difference - difference.mean()).mean())
    bona = np.array(features["bonafide"])
    distance = {a: np.linalg.norm(((np.array(f) - bona.mean(0)) / bona.std(0)).mean(0))
                for a, f in features.items() if a != "bonafide"}
    assert max(distance["A17"], distance["A18"]) < min(distance["A01"], distance["A02"]), distance
    assert max(np.mean(spectra["A17"]), np.mean(spectra["A18"])) <= np.mean(spectra["A02"]), spectra


def test_test_sets_sized_apart_from_training(tmp_path):
    """SV: test speakers with their own session and utterance counts, every target pair and `nontarget_trials`
    distinct non-target pairs (drawn reproducibly); CM: dev and eval speakers with their own counts. Training audio
    is the same file for file as without these settings."""
    plain = synth.write_sv_corpus(tmp_path / "sv0", seed=3, **SV_ARGS)
    summary = synth.write_sv_corpus(tmp_path / "sv1", seed=3, **SV_ARGS, test_sessions=3,
                                    test_utterances_per_session=2, nontarget_trials=40)
    assert summary["test"]["utterances"] == 3 * 3 * 2 and summary["train"] == plain["train"]
    train = lambda root: tree_bytes(root / "voxceleb2")  # noqa: E731
    assert train(tmp_path / "sv0") == train(tmp_path / "sv1")
    lines = (tmp_path / "sv1" / "voxceleb1" / "veri_test2.txt").read_text().splitlines()
    trials = [TRIAL.match(line).groups() for line in lines]
    assert len(set(lines)) == len(lines) and summary["trials"] == {"target": 3 * 15, "nontarget": 40}
    assert all((label == "1") == (a == b) for label, a, b in trials)
    utts = sorted({u for line in lines for u in line.split(" ")[1:]})
    assert len(utts) == 18 and {tuple(line.split(" ")[1:]) for line in lines} <= set(combinations(utts, 2))
    again = synth.write_sv_corpus(tmp_path / "sv2", seed=3, **SV_ARGS, test_sessions=3,
                                  test_utterances_per_session=2, nontarget_trials=40)
    assert (tmp_path / "sv2" / "voxceleb1" / "veri_test2.txt").read_text() == "\n".join(lines) + "\n"
    assert again == summary
    cm_plain = synth.write_cm_corpus(tmp_path / "cm0", seed=4, **CM_ARGS)
    cm = synth.write_cm_corpus(tmp_path / "cm1", seed=4, **{**CM_ARGS, "test_speakers": 3},
                               test_bonafide_per_speaker=9, test_spoofed_per_speaker=12)
    assert cm["train"] == cm_plain["train"] and cm["dev"]["speakers"] == cm["eval"]["speakers"] == 3
    assert tree_bytes(tmp_path / "cm0" / "flac_T") == tree_bytes(tmp_path / "cm1" / "flac_T")
    for split in ("dev", "eval"):
        speakers = cm[split]["speakers"]
        assert (cm[split]["bonafide"], cm[split]["spoof"]) == (9 * speakers, 12 * speakers)
        assert sum(cm[split]["attacks"].values()) == 12 * speakers
