"""Delivery notes as records (``telegram/notes.py``) and what a resend makes of them
(``resending.resolved``): pure, no I/O."""

from __future__ import annotations

from toolweave.telegram import notes, questions
from toolweave.telegram.parts import Media, Part
from toolweave.telegram.resending import resend_buttons, resend_key, resolved


def album() -> Part:
    return Part("sendMediaGroup", media=[Media("bright", "photo", "b.jpg"), Media("dark", "photo", "d.jpg")])


def test_a_resend_that_delivered_part_of_an_album_leaves_only_the_rest_in_doubt() -> None:
    before = {"notes": [notes.as_file("sheet", "photos", right=True), notes.withheld(["bright", "dark"], "documents", 0)],
              "doubts": [0], "itemDoubts": {}, "resends": {}}
    after = resolved(before, 0, album(), [0, 1], ["bright"])
    assert after["doubts"] == [0] and after["itemDoubts"] == {"0": {"items": [1], "outputs": ["dark"]}}
    assert notes.texts(after["notes"])[1:] == [
        "✅ bright: sent again below.",
        notes.withheld(["dark"], "documents", 0)["text"],
    ]
    assert after["resends"] == {"0": 1}
    state = {"sent": [{"outputs": ["bright", "dark"]}], **after}
    assert [b["text"] for b in resend_buttons("ntf_1", after["doubts"], state)] == ["📥 dark"]
    assert resend_key("ntf_1", 0, state) == "tg:resend:ntf_1:0:1" != resend_key("ntf_1", 0, before)
    # the rest arrives too: nothing is in doubt any more, and one line says what was sent again
    done = resolved({**before, **after}, 0, album(), [1], ["dark"])
    assert done["doubts"] == [] and done["itemDoubts"] == {}
    assert [notes.kind(n) for n in done["notes"]] == ["asFile", "resent", "resent"]


def test_a_resend_that_delivered_nothing_changes_nothing_but_its_count() -> None:
    before = {"notes": [notes.interrupted(["sheet"], 2)], "doubts": [2], "itemDoubts": {}, "resends": {"2": 1}}
    after = resolved(before, 2, Part("sendDocument", media=[Media("sheet", "document", "s.png")]), [0], [])
    assert after == {**before, "resends": {"2": 2}}


def test_the_candidates_not_shown_are_read_from_fields() -> None:
    recorded = [notes.refused("#3", "Bad Request: file is too big"), notes.as_file("#2", "photos", right=True),
                notes.withheld(["#4"], "documents", 3), notes.interrupted(["#1"], 0),
                "#5: could not be sent (a line recorded before notes had fields)"]
    assert questions.unseen(recorded) == {2: "Bad Request: file is too big",
                                          3: "the bot may not send documents in this chat"}
    assert questions.unseen_refusal([0, 1], questions.unseen(recorded), 5) is None
    assert questions.unseen_refusal([1, 3], questions.unseen(recorded), 5) == (
        "#4 was not shown here (the bot may not send documents in this chat): choose among #1, #2, #5, "
        "or tap “None of them”.")
