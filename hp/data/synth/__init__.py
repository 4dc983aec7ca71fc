"""The built-in mini corpus: deterministic, speech-like 16 kHz audio for smoke runs, with no downloads. The writers
load with the package, the synthesiser's names on first use (PEP 562): checking a writer's params (the report
stage does) then neither imports nor depends on the synthesiser."""
from hp.data.audio import SAMPLE_RATE
from hp.data.synth.corpus import CODED_EVERY, SV_DIRS, write_cm_corpus, write_sv_corpus

_LAZY = {  # name -> the synthesiser module that owns it
    **dict.fromkeys(["CM_ATTACKS", "CM_SPLIT_ATTACKS", "CM_SPOOFERS", "band_filters"], "attacks"),
    **dict.fromkeys(["CM_CODECS", "Channel", "codec_channel"], "channels"),
    **dict.fromkeys(["Session", "Utterance", "Voice", "peak_normalise", "recording_session", "speaker_voice",
                     "synthesize"], "speech"),
    **dict.fromkeys(["CM", "PRETRAIN", "SPEAKER", "SV", "UTTERANCE", "stream"], "streams"),
}
__all__ = sorted(["CODED_EVERY", "SAMPLE_RATE", "SV_DIRS", "write_cm_corpus", "write_sv_corpus", *_LAZY])


def __getattr__(name: str):
    if name not in _LAZY:  # a submodule's name too: the import system then imports it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from hp.data.synth import attacks, channels, speech, streams

    value = getattr({"attacks": attacks, "channels": channels, "speech": speech, "streams": streams}[_LAZY[name]], name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
