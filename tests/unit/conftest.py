"""Fixtures of the unit tier."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf


@pytest.fixture
def corpus(tmp_path):
    """A tiny SV training manifest: 3 speakers of 4 noise utterances (0.5 s, 16 kHz)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(3):
        for u in range(4):
            path = tmp_path / f"id{s}" / f"{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
            rows.append({"utt": f"id{s}/{u}.wav", "path": str(path), "speaker": f"id{s}", "label": f"id{s}",
                         "duration_s": 0.5})
    return pd.DataFrame(rows)
