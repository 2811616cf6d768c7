"""``poisonlab scan`` and ``poisonlab manifest``: real files in the exact formats, one-line errors."""

import io
import json

import numpy as np
import pytest
import torch

from poisonlab.cli import main
from poisonlab.model_checkpoint import load_checkpoint, save_checkpoint
from poisonlab.models import make_model
from test_detect_common import backdoor_world, single_thread  # noqa: F401 (autouse)


def write_npz(path, data, mask):
    buf = io.BytesIO()
    np.savez_compressed(buf, x=data.x.numpy(), y=data.y.numpy(), classes=np.array(data.classes, dtype=str),
                        mask=mask.numpy())
    path.write_bytes(buf.getvalue())


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = make_model("mlp", (3,), 2, seed=1, hidden=[4])
    path = save_checkpoint(model, tmp_path / "m.safetensors", "mlp", (3,), 2, {"hidden": [4]})
    again = load_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    (tmp_path / "m.pt").write_bytes(b"\x80\x04junk")
    assert main(["scan", "--dataset", "digits", "--detector", "anomaly", "--model", str(tmp_path / "m.pt")]) == 2


def test_scan_prints_and_writes_a_report(tmp_path, capsys):
    poisoned, mask, _, bad, _ = backdoor_world()
    write_npz(tmp_path / "p.npz", poisoned, mask)
    save_checkpoint(bad, tmp_path / "bad.safetensors", "cnn", (1, 8, 8), 4, {"channels": [8, 16], "hidden": 32})
    code = main(["scan", "--dataset", str(tmp_path / "p.npz"), "--detector", "spectral_signatures",
                 "--params", '{"epsilon": 0.3, "classes": [0]}', "--model", str(tmp_path / "bad.safetensors"),
                 "--truth", str(tmp_path / "p.npz"), "--out", str(tmp_path / "rep")])
    assert code == 0
    out = capsys.readouterr().out
    assert "TPR" in out and "AUROC" in out
    record = json.loads((tmp_path / "rep" / "detection.json").read_text())
    assert record["detector"] == "spectral_signatures" and len(record["scores"]) == len(poisoned)
    assert record["tpr"] >= 0.9
    assert (tmp_path / "rep" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "rep").glob(".*")] == [".poisonlab"]  # its marker; no temp files left


def test_scan_errors_are_one_line(tmp_path, capsys):
    assert main(["scan", "--dataset", "digits", "--detector", "spectral_signatrues"]) == 2
    assert "did you mean 'spectral_signatures'" in capsys.readouterr().err
    assert main(["scan", "--dataset", "digits", "--detector", "strip"]) == 2
    assert "needs a model" in capsys.readouterr().err
    np.save(tmp_path / "t.npy", np.zeros(3, dtype=bool))
    assert main(["scan", "--dataset", "digits", "--detector", "anomaly", "--truth", str(tmp_path / "t.npy"),
                 "--out", str(tmp_path / "r")]) == 2
    assert "expected (1797,)" in capsys.readouterr().err


def test_manifest_create_verify_reports_changes(tmp_path, capsys):
    poisoned, mask, _, _, _ = backdoor_world()
    path = tmp_path / "d.npz"
    write_npz(path, poisoned.subset(torch.arange(50)), mask[:50])
    (tmp_path / "secret").write_bytes(b"s3cret")
    assert main(["manifest", "create", str(path), "--key", str(tmp_path / "secret")]) == 0
    assert main(["manifest", "verify", str(path), "--key", str(tmp_path / "secret")]) == 0
    capsys.readouterr()
    data = poisoned.subset(torch.arange(50))
    x = data.x.clone()
    x[7, 0, 0, 0] = 0.5
    write_npz(path, data.replace(x=x).subset(torch.arange(49)), mask[:49])  # sample 7 changed, 49 removed
    assert main(["manifest", "verify", str(path), "--key", str(tmp_path / "secret")]) == 1
    out = capsys.readouterr().out
    assert "changed: 7" in out and "removed: 49" in out
    manifest = tmp_path / "d.npz.manifest.signed.json"
    m = json.loads(manifest.read_text())
    m["samples"][0]["label"] = 9
    manifest.write_text(json.dumps(m))
    assert main(["manifest", "verify", str(path), "--key", str(tmp_path / "secret")]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_manifest_ed25519_keygen_and_checkpoint(tmp_path, capsys):
    assert main(["manifest", "keygen", str(tmp_path / "k")]) == 0
    model = make_model("logistic", (4,), 2)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors", "logistic", (4,), 2)
    assert main(["manifest", "create", str(ckpt), "--key", str(tmp_path / "k.pem")]) == 0
    assert main(["manifest", "verify", str(ckpt), "--key", str(tmp_path / "k.pub.pem")]) == 0
    with torch.no_grad():
        model[1].bias += 1.0
    save_checkpoint(model, ckpt, "logistic", (4,), 2)
    capsys.readouterr()
    assert main(["manifest", "verify", str(ckpt), "--key", str(tmp_path / "k.pub.pem")]) == 1
    assert "changed: 1.bias" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["manifest", "sign", str(ckpt)])


def test_scan_strip_and_provenance_take_a_clean_set(tmp_path, capsys):
    poisoned, mask, test_set, bad, _ = backdoor_world()
    write_npz(tmp_path / "p.npz", poisoned, mask)
    write_npz(tmp_path / "clean.npz", test_set, torch.zeros(len(test_set), dtype=torch.bool))
    save_checkpoint(bad, tmp_path / "bad.safetensors", "cnn", (1, 8, 8), 4, {"channels": [8, 16], "hidden": 32})
    assert main(["scan", "--dataset", str(tmp_path / "p.npz"), "--detector", "strip", "--params", '{"n_overlays": 4}',
                 "--model", str(tmp_path / "bad.safetensors"), "--clean", str(tmp_path / "clean.npz"),
                 "--out", str(tmp_path / "s")]) == 0
    assert len(json.loads((tmp_path / "s" / "detection.json").read_text())["scores"]) == len(poisoned)
    # provenance reads a 'source' array from the dataset npz; source 'bad' flips its labels
    # (a backdoor leaves clean accuracy intact, so label flips are what this defense can see)
    arrays = dict(np.load(tmp_path / "p.npz"))
    bad_src = np.arange(len(mask)) % 4 == 0
    arrays["y"] = np.where(bad_src, (arrays["y"] + 1) % 4, arrays["y"])
    arrays["mask"] = bad_src
    arrays["source"] = np.where(bad_src, "bad", np.array(["a", "b"])[np.arange(len(mask)) % 2])
    np.savez(tmp_path / "src.npz", **arrays)
    assert main(["scan", "--dataset", str(tmp_path / "src.npz"), "--detector", "provenance", "--clean",
                 str(tmp_path / "clean.npz"), "--truth", str(tmp_path / "src.npz"), "--out", str(tmp_path / "v")]) == 0
    details = json.loads((tmp_path / "v" / "detection.json").read_text())["details"]
    assert details["flagged_sources"] == ["bad"]
