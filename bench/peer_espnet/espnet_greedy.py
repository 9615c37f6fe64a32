"""Greedy (best-path) CTC decoding of trained ESPnet2 checkpoints, and their parameter count.

Runs inside the ESPnet venv, called by bench/peer_espnet.py:

    espnet_greedy.py --config EXP/config.yaml --wav-scp DATA/test/wav.scp --out DIR EXP/a.pth EXP/b.pth ...

For each checkpoint, DIR/<checkpoint name>.txt gets one `kaldi-id text` line per utterance; DIR/info.json gets the
parameter count and the decoding time. Per utterance (one at a time, no padding, eval mode, CPU): model.encode
(frontend -> global_mvn -> conformer) -> CTC head -> argmax per frame -> merge repeats -> drop <blank> -> text,
<space> -> ' '. This is the same search as xlingual's greedy decoding; espnet2.bin.asr_inference with beam 1 runs a
label-synchronous prefix search instead, which is not plain best-path decoding.
"""
import argparse
import json
import time
from pathlib import Path

import soundfile as sf
import torch
from espnet2.tasks.asr import ASRTask


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the training run's config.yaml")
    ap.add_argument("--wav-scp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("checkpoints", nargs="+")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wavs = [line.split(maxsplit=1) for line in Path(a.wav_scp).read_text(encoding="utf-8").splitlines() if line]
    info = {"threads": torch.get_num_threads(), "checkpoints": {}}
    for ckpt in a.checkpoints:
        model, _ = ASRTask.build_model_from_file(a.config, ckpt, "cpu")
        model.eval()
        tokens = model.token_list
        blank = tokens.index("<blank>")
        info["params"] = sum(p.numel() for p in model.parameters())
        info["params_by_part"] = {"encoder": sum(p.numel() for p in model.encoder.parameters()),
                                  "conv2d_stem": sum(p.numel() for p in model.encoder.embed.parameters()),
                                  "ctc_head": sum(p.numel() for p in model.ctc.parameters())}
        info["vocab_size"] = len(tokens)
        audio = 0.0
        t0 = time.perf_counter()
        with open(out / f"{Path(ckpt).name}.txt", "w", encoding="utf-8") as f, torch.no_grad():
            for utt, path in wavs:
                wav, sr = sf.read(path.strip(), dtype="float32")
                audio += len(wav) / sr
                x = torch.from_numpy(wav)[None]
                enc, enc_lens = model.encode(x, torch.tensor([x.shape[1]]))
                ids = torch.unique_consecutive(model.ctc.argmax(enc)[0, : enc_lens[0]]).tolist()
                text = "".join(" " if tokens[i] == "<space>" else tokens[i] for i in ids if i != blank)
                f.write(f"{utt} {' '.join(text.split())}\n")
        info["checkpoints"][Path(ckpt).name] = {"decode_seconds": time.perf_counter() - t0, "audio_seconds": audio}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
