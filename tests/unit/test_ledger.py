"""The ledger keeps what a crash could lose: written before the change, closed after undo."""

from inferchaos.faults.ledger import Ledger, UndoStep


def test_open_until_reverted(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    a = ledger.applied("spot_reclamation", [UndoStep("restore_desired", {"state_dir": "d", "values": {}})])
    b = ledger.applied("load", [])
    assert {e.id for e in ledger.open_entries()} == {a.id, b.id}
    ledger.reverted(a)
    assert [e.id for e in ledger.open_entries()] == [b.id]


def test_extend_keeps_the_newest_undo(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    e = ledger.applied("spot_reclamation", [UndoStep("restore_desired", {"state_dir": "d", "values": {}})])
    ledger.extend(e, [UndoStep("end_group", {"pgid": 42, "started": 1})])
    (entry,) = ledger.open_entries()
    assert [u.op for u in entry.undo] == ["restore_desired", "end_group"]


def test_a_line_cut_short_by_a_crash_loses_nothing_before_it(tmp_path):
    path = tmp_path / "l.jsonl"
    ledger = Ledger(path)
    kept = ledger.applied("replica_hang", [UndoStep("signal_process", {"pid": 1, "started": 1, "sig": "SIGCONT"})])
    with open(path, "ab") as f:
        f.write(b'{"id":"abc","event":"applied","fau')  # the runner died mid-write
    assert [e.id for e in ledger.open_entries()] == [kept.id]
    later = ledger.applied("load", [])  # the next writer starts on a fresh line
    assert {e.id for e in ledger.open_entries()} == {kept.id, later.id}


def test_failed_revert_stays_open(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    e = ledger.applied("gpu_oom", [])
    ledger.reverted(e, ok=False, detail="boom")
    assert [x.id for x in ledger.open_entries()] == [e.id]
