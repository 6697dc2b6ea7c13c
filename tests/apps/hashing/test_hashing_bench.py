"""`ssmkit bench hashing` runs end to end on tiny sizes and agrees with faiss."""

from __future__ import annotations

from ssmkit_apps.hashing.bench import bench_hashing


def test_bench_reports_every_variant_and_matches_faiss(capsys):
    assert bench_hashing(["--n", "3000", "--queries", "4", "-k", "5", "--batch", "2", "--encoder-repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert rows[1:4] == ["numpy xor+popcount top-k", "numpy xor+popcount scan", "faiss IndexBinaryFlat"]
    assert "same distances as numpy: yes" in out
    assert [r for r in rows if r in ("prompthash", "dcmh")] == ["prompthash", "prompthash", "dcmh", "dcmh"]
