"""Which trials count as single-family members in report.md's per-family table."""

from nas.report import family_bests, uses_only

# hybrid_cpu's slots: 0 offers ghost/csa/saa, 1 ghost/lightvit/rasa/saa, 2 (may be skipped) ghost/fwa, 3 all five
SLOTS = [["ghost", "csa", "saa"], ["ghost", "lightvit", "rasa", "saa"], ["ghost", "fwa"],
         ["ghost", "fwa", "lightvit", "rasa", "saa"]]


def _row(families, slots, val_acc=0.5, latency_ms=1.0):
    return {"families": families, "slots": slots, "val_acc": val_acc, "latency_ms": latency_ms, "feasible": True}


def test_a_skipped_slot_does_not_shift_the_later_stages():
    skipped = _row("ghost-rasa-saa", "0-1-3")  # slot 3 offers rasa but uses saa: not rasa-only
    assert not uses_only(skipped, "rasa", SLOTS)
    assert uses_only(_row("csa-rasa-rasa", "0-1-3"), "rasa", SLOTS)
    assert uses_only(_row("ghost-saa-fwa", "0-1-3"), "fwa", SLOTS)  # slot 2, which offers fwa too, is skipped
    assert not uses_only(_row("ghost-saa-ghost-fwa", "0-1-2-3"), "fwa", SLOTS)  # slot 2 offers fwa, uses ghost
    assert not uses_only(_row("ghost-saa-ghost-fwa", "0-1-2-3"), "ghost", SLOTS)
    assert not uses_only(_row("ghost-saa-ghost", "0-1-3"), "fwa", SLOTS)  # never used, though offered


def test_family_bests_picks_the_most_accurate_feasible_member_of_each_family():
    rows = [_row("ghost-ghost-ghost", "0-1-3", 0.7), _row("ghost-ghost-ghost-ghost", "0-1-2-3", 0.8, 3.0),
            _row("ghost-ghost-ghost-ghost", "0-1-2-3", 0.9) | {"feasible": False}, _row("csa-rasa-rasa", "0-1-3", 0.6)]
    bests = family_bests(rows, SLOTS)
    assert list(bests) == ["ghost", "csa", "saa", "lightvit", "rasa", "fwa"]
    assert bests["ghost"]["val_acc"] == 0.8 and bests["rasa"]["val_acc"] == 0.6 and bests["csa"]["val_acc"] == 0.6
    assert bests["saa"] is None and bests["lightvit"] is None and bests["fwa"] is None
