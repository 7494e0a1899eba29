"""The publisher's ledger: each message from read to publish, in flight by delivery tag, settled by acks
and nacks (single, multiple, out of order), taken back, returned, and reported in input order."""

from __future__ import annotations

from workqueue.ledger import Ledger, Message


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


def published(ledger: Ledger) -> list[str]:
    return texts(list(ledger.publish()))


def ack(ledger: Ledger, tag: int, multiple: bool = False) -> list[Message]:
    settled = ledger.settle(tag, multiple)
    ledger.confirm(settled)
    return settled


def test_added_messages_are_numbered_in_input_order_and_wait_to_publish():
    ledger = Ledger(window=10)
    ledger.add(["a", "b"])
    ledger.add(["c"])
    assert ledger.read == 3
    assert [(m.text, m.number) for m in ledger.todo] == [("a", 1), ("b", 2), ("c", 3)]
    assert ledger.waiting() and not ledger.settled()


def test_publish_gives_delivery_tags_from_one_up_to_the_window():
    ledger = Ledger(window=2)
    ledger.add(["a", "b", "c"])
    assert published(ledger) == ["a", "b"]
    assert {tag: m.text for tag, m in ledger.inflight.items()} == {1: "a", 2: "b"}
    assert published(ledger) == []  # the window is full
    assert texts(list(ledger.todo)) == ["c"]


def test_each_ack_makes_room_in_the_window():
    ledger = Ledger(window=2)
    ledger.add(["a", "b", "c", "d"])
    published(ledger)
    ack(ledger, 1)
    assert published(ledger) == ["c"]
    assert sorted(ledger.inflight) == [2, 3]


def test_a_single_ack_settles_that_tag_only():
    ledger = Ledger(window=10)
    ledger.add(["a", "b", "c"])
    published(ledger)
    assert texts(ack(ledger, 2)) == ["b"]
    assert sorted(ledger.inflight) == [1, 3]


def test_a_multiple_ack_settles_every_tag_up_to_it_in_order():
    ledger = Ledger(window=10)
    ledger.add(["a", "b", "c", "d"])
    published(ledger)
    assert texts(ack(ledger, 3, multiple=True)) == ["a", "b", "c"]
    assert sorted(ledger.inflight) == [4]


def test_a_multiple_ack_skips_tags_settled_already():
    ledger = Ledger(window=10)
    ledger.add(["a", "b", "c", "d"])
    published(ledger)
    ack(ledger, 2)
    assert texts(ack(ledger, 4, multiple=True)) == ["a", "c", "d"]
    assert not ledger.inflight


def test_a_tag_settled_twice_settles_nothing_the_second_time():
    ledger = Ledger(window=10)
    ledger.add(["a"])
    published(ledger)
    assert texts(ack(ledger, 1)) == ["a"]
    assert ledger.settle(1, False) == [] and ledger.settle(1, True) == []
    assert ledger.settle(99, False) == []


def test_acks_out_of_order_report_only_the_confirmed_prefix_in_input_order():
    ledger = Ledger(window=10)
    ledger.add(["a", "b", "c", "d"])
    published(ledger)
    ack(ledger, 3)
    ack(ledger, 2)
    assert ledger.reportable() == []  # "a" is not confirmed: nothing after it is reported yet
    ack(ledger, 1)
    assert texts(ledger.reportable()) == ["a", "b", "c"]
    assert ledger.reported == 3
    ack(ledger, 4)
    assert texts(ledger.reportable()) == ["d"]
    assert ledger.reported == 4
    assert ledger.settled() and not ledger.waiting()


def test_reportable_takes_messages_off_the_book_once():
    ledger = Ledger(window=10)
    ledger.add(["a"])
    published(ledger)
    ack(ledger, 1)
    assert texts(ledger.reportable()) == ["a"]
    assert ledger.reportable() == [] and ledger.reported == 1


def test_a_nack_puts_those_messages_ahead_of_the_rest_in_input_order():
    ledger = Ledger(window=3)
    ledger.add(["a", "b", "c", "d", "e"])
    published(ledger)  # a b c in flight; d e to publish
    nacked = ledger.settle(3, False) + ledger.settle(1, False)  # c then a
    ledger.take_back(nacked)
    assert texts(list(ledger.todo)) == ["a", "c", "d", "e"]
    assert published(ledger) == ["a", "c"]  # under the channel's next tags
    assert {tag: m.text for tag, m in ledger.inflight.items()} == {2: "b", 4: "a", 5: "c"}


def test_a_nacked_message_is_not_reported_until_published_again_and_acked():
    ledger = Ledger(window=10)
    ledger.add(["a", "b"])
    published(ledger)
    ledger.take_back(ledger.settle(1, False))
    ack(ledger, 2)
    assert ledger.reportable() == []
    assert published(ledger) == ["a"]
    ack(ledger, 3)
    assert texts(ledger.reportable()) == ["a", "b"]


def test_a_channel_given_up_on_takes_back_all_in_flight_and_tags_restart_at_one():
    ledger = Ledger(window=3)
    ledger.add(["a", "b", "c", "d"])
    published(ledger)
    ack(ledger, 2)
    ledger.take_back()
    assert not ledger.inflight
    assert texts(list(ledger.todo)) == ["a", "c", "d"]
    assert published(ledger) == ["a", "c", "d"]
    assert {tag: m.text for tag, m in ledger.inflight.items()} == {1: "a", 2: "c", 3: "d"}


def test_after_a_new_channel_old_multiple_acks_do_not_reach_back():
    ledger = Ledger(window=10)
    ledger.add(["a", "b", "c"])
    published(ledger)
    ledger.take_back()
    assert published(ledger) == ["a", "b", "c"]
    assert texts(ack(ledger, 1, multiple=True)) == ["a"]  # tag 1 of the new channel only
    assert sorted(ledger.inflight) == [2, 3]


def test_settling_old_tags_after_the_channel_was_given_up_on_does_nothing():
    ledger = Ledger(window=10)
    ledger.add(["a", "b"])
    published(ledger)
    ledger.take_back()
    assert ledger.settle(1, False) == [] and ledger.settle(2, True) == []
    assert texts(list(ledger.todo)) == ["a", "b"]
    assert ledger.waiting()


def test_a_returned_message_is_marked_and_not_confirmed_when_acked():
    ledger = Ledger(window=10)
    ledger.add(["a", "b"])
    published(ledger)
    returned = ledger.returned("b")
    assert returned is ledger.inflight[2] and returned.returned
    ack(ledger, 2, multiple=True)
    assert not returned.confirmed
    assert ledger.inflight == {} and not ledger.waiting()
    assert texts(ledger.reportable()) == ["a"]  # "b" was not stored: it is not reported as sent
    assert not ledger.settled()


def test_returns_of_the_same_text_mark_one_message_each_in_order():
    ledger = Ledger(window=10)
    ledger.add(["same", "other", "same"])
    published(ledger)
    first, second = ledger.returned("same"), ledger.returned("same")
    assert (first.number, second.number) == (1, 3)
    assert ledger.returned("same") is None
    assert ledger.returned("never sent") is None


def test_waiting_and_settled_through_a_messages_life():
    ledger = Ledger(window=1)
    assert not ledger.waiting() and ledger.settled()
    ledger.add(["a"])
    assert ledger.waiting() and not ledger.settled()  # to publish
    published(ledger)
    assert ledger.waiting() and not ledger.settled()  # in flight
    ack(ledger, 1)
    assert not ledger.waiting() and not ledger.settled()  # stored, not reported yet
    ledger.reportable()
    assert not ledger.waiting() and ledger.settled()


def test_message_repr_names_text_and_number():
    assert repr(Message("hi", 7)) == "Message('hi', 7)"
