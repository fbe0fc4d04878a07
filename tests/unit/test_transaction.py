"""RFC 3261 section 17 transactions driven by a fake clock."""

from __future__ import annotations

import pytest

from gateway.sip.message import Request, Response, build_request, make_response, parse_message
from gateway.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    RequestReceived,
    ResponseReceived,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransactionUsageError,
    TxState,
)

BRANCH = "z9hG4bKtest1"


def invite(branch: str = BRANCH, method: str = "INVITE") -> Request:
    return build_request(
        method, "sip:bob@127.0.0.1:5070",
        from_addr="<sip:alice@127.0.0.1>;tag=ft1", to_addr="<sip:bob@127.0.0.1>",
        call_id="cid-1@127.0.0.1", cseq=1,
        via=f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport",
        contact="<sip:alice@127.0.0.1:5060>",
        extra=[("Route", "<sip:proxy.example;lr>")],
    )


def response(req: Request, status: int, to_tag: str | None = "tt1") -> Response:
    # round-trip through bytes so the transaction sees what the wire would give it
    resp = parse_message(bytes(make_response(req, status, to_tag=to_tag)))
    assert isinstance(resp, Response)
    return resp


def run_until(tx: ClientInviteTransaction | ClientNonInviteTransaction
              | ServerInviteTransaction | ServerNonInviteTransaction,
              end: float) -> tuple[list[float], list[object]]:
    """Fire timers up to `end`; return the times at which something was sent, and events."""
    sent_at: list[float] = []
    events: list[object] = []
    tx.messages_to_send()
    while (deadline := tx.get_timer()) is not None and deadline <= end:
        events.extend(tx.handle_timer(deadline))
        for _ in tx.messages_to_send():
            sent_at.append(deadline)
    return sent_at, events


def test_client_invite_retransmits_with_doubling_then_timer_b_times_out() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, 100.0)
    assert tx.messages_to_send() == [req]
    sent_at, events = run_until(tx, 200.0)
    # Timer A: 0.5, 1, 2, 4, 8, 16 s intervals -> sends at +0.5, +1.5, +3.5, +7.5, +15.5, +31.5
    assert [round(t - 100.0, 3) for t in sent_at] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert events == [TransactionTimedOut("timeout"), TransactionTerminated()]
    assert tx.terminated
    assert tx.get_timer() is None


def test_client_invite_reliable_does_not_retransmit() -> None:
    tx = ClientInviteTransaction(invite(), 0.0, reliable=True)
    sent_at, events = run_until(tx, 100.0)
    assert sent_at == []
    assert TransactionTimedOut("timeout") in events


def test_client_invite_provisional_stops_retransmission() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, 0.0)
    tx.messages_to_send()
    events = tx.receive(response(req, 180), 0.2)
    assert isinstance(events[0], ResponseReceived) and events[0].response.status == 180
    assert tx.state is TxState.PROCEEDING
    assert tx.get_timer() is None  # neither A nor B run in Proceeding


def test_client_invite_non_2xx_is_acked_by_transaction() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, 0.0)
    tx.messages_to_send()
    busy = response(req, 486, to_tag="callee-tag")
    events = tx.receive(busy, 1.0)
    assert [type(e) for e in events] == [ResponseReceived]
    assert tx.state is TxState.COMPLETED
    (ack,) = tx.messages_to_send()
    assert isinstance(ack, Request) and ack.method == "ACK"
    ack = parse_message(bytes(ack))
    assert isinstance(ack, Request)
    assert ack.branch == BRANCH
    assert ack.to_tag == "callee-tag"
    assert ack.from_tag == "ft1"
    assert ack.cseq.number == 1 and ack.cseq.method == "ACK"
    assert ack.uri == req.uri
    assert ack.headers.get("Route") == "<sip:proxy.example;lr>"
    # a retransmitted 486 is absorbed, but re-ACKed
    assert tx.receive(busy, 2.0) == []
    (again,) = tx.messages_to_send()
    assert isinstance(again, Request) and again.method == "ACK"
    # Timer D (32 s on UDP) ends it
    assert tx.get_timer() == pytest.approx(33.0)
    assert tx.handle_timer(33.0) == [TransactionTerminated()]


def test_client_invite_2xx_goes_to_tu_and_accepted_passes_retransmissions() -> None:
    req = invite()
    tx = ClientInviteTransaction(req, 0.0)
    tx.messages_to_send()
    ok = response(req, 200)
    assert tx.receive(ok, 1.0) == [ResponseReceived(ok)]
    assert tx.state is TxState.ACCEPTED
    assert tx.messages_to_send() == []  # the TU sends the end-to-end ACK
    assert tx.receive(ok, 1.5) == [ResponseReceived(ok)]
    assert tx.receive(response(req, 180), 1.6) == []
    assert tx.get_timer() == pytest.approx(33.0)  # Timer M = 64*T1
    assert tx.handle_timer(33.0) == [TransactionTerminated()]


def test_client_invite_transport_error_is_a_timeout() -> None:
    tx = ClientInviteTransaction(invite(), 0.0)
    assert tx.transport_error(0.1) == [TransactionTimedOut("transport error"),
                                       TransactionTerminated()]


def test_non_invite_timer_e_caps_at_t2_and_custom_timeout() -> None:
    req = invite(method="OPTIONS")
    tx = ClientNonInviteTransaction(req, 0.0)
    sent_at, events = run_until(tx, 100.0)
    intervals = [round(b - a, 3) for a, b in zip([0.0, *sent_at], sent_at, strict=False)]
    assert intervals[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert events[-2:] == [TransactionTimedOut("timeout"), TransactionTerminated()]
    assert sent_at[-1] < 32.0

    fast = ClientNonInviteTransaction(invite(method="OPTIONS"), 10.0, timeout=2.0)
    sent_at, events = run_until(fast, 100.0)
    assert [round(t, 3) for t in sent_at] == [10.5, 11.5]
    assert events == [TransactionTimedOut("timeout"), TransactionTerminated()]


def test_non_invite_provisional_switches_retransmit_to_t2_and_k_after_final() -> None:
    req = invite(method="REGISTER")
    tx = ClientNonInviteTransaction(req, 0.0)
    tx.messages_to_send()
    tx.receive(response(req, 100, to_tag=None), 0.1)
    assert tx.state is TxState.PROCEEDING
    tx.handle_timer(0.5)  # first Timer E still at T1
    assert len(tx.messages_to_send()) == 1
    assert tx.get_timer() == pytest.approx(4.5)  # then T2
    ok = response(req, 200)
    assert tx.receive(ok, 5.0) == [ResponseReceived(ok)]
    assert tx.receive(ok, 5.1) == []  # absorbed in Completed
    assert tx.get_timer() == pytest.approx(10.0)  # Timer K = T4
    assert tx.handle_timer(10.0) == [TransactionTerminated()]


def test_server_invite_absorbs_retransmission_by_resending_last_response() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    assert tx.messages_to_send() == []
    tx.send_response(make_response(req, 180, to_tag="uas"), 0.05)
    (ringing,) = tx.messages_to_send()
    assert isinstance(ringing, Response) and ringing.status == 180
    assert tx.receive(req, 0.6) == []  # retransmitted INVITE: not passed up
    (again,) = tx.messages_to_send()
    assert isinstance(again, Response) and again.status == 180
    assert tx.get_timer() is None  # no automatic 100 once the TU responded


def test_server_invite_sends_100_after_200ms_if_tu_is_silent() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    assert tx.get_timer() == pytest.approx(0.2)
    tx.handle_timer(0.2)
    (trying,) = tx.messages_to_send()
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to_tag is None


def test_server_invite_non_2xx_retransmits_until_ack_then_confirmed() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    tx.send_response(make_response(req, 486, to_tag="uas"), 0.0)
    tx.messages_to_send()
    sent_at, _ = run_until(tx, 4.0)
    assert [round(t, 3) for t in sent_at] == [0.5, 1.5, 3.5]  # Timer G 0.5, 1, 2
    ack = build_request("ACK", req.uri, from_addr=req.headers.get("From") or "",
                        to_addr="<sip:bob@127.0.0.1>;tag=uas", call_id=req.call_id, cseq=1,
                        via=f"SIP/2.0/UDP 127.0.0.1:5060;branch={BRANCH}")
    layer = TransactionLayer()
    layer.add(tx)
    assert layer.match_request(ack) is tx
    assert tx.receive(ack, 4.0) == []
    assert tx.state is TxState.CONFIRMED
    assert tx.messages_to_send() == []
    assert tx.get_timer() == pytest.approx(9.0)  # Timer I = T4
    assert tx.handle_timer(9.0) == [TransactionTerminated()]


def test_server_invite_timer_h_without_ack() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    tx.send_response(make_response(req, 404, to_tag="uas"), 0.0)
    sent_at, events = run_until(tx, 100.0)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *sent_at], sent_at, strict=False)]
    assert max(gaps) == pytest.approx(4.0)  # Timer G capped at T2
    assert events[-2:] == [TransactionTimedOut("timeout"), TransactionTerminated()]


def test_server_invite_2xx_enters_accepted_and_leaves_retransmission_to_tu() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    ok = make_response(req, 200, to_tag="uas")
    tx.send_response(ok, 0.0)
    assert tx.state is TxState.ACCEPTED
    tx.messages_to_send()
    assert tx.receive(req, 0.5) == []
    assert tx.messages_to_send() == []  # retransmitted INVITE absorbed, no resend
    tx.send_response(ok, 0.5)  # the TU's retransmission goes out
    assert tx.messages_to_send() == [ok]
    assert tx.get_timer() == pytest.approx(32.0)
    with pytest.raises(TransactionUsageError):
        tx.send_response(make_response(req, 486), 1.0)


def test_server_invite_passes_ack_matching_in_accepted() -> None:
    req = invite()
    tx = ServerInviteTransaction(req, 0.0)
    tx.send_response(make_response(req, 200, to_tag="uas"), 0.0)
    ack = invite(method="ACK")
    assert tx.receive(ack, 0.1) == [RequestReceived(ack)]


def test_server_non_invite_answers_retransmissions_with_last_response() -> None:
    req = invite(method="OPTIONS")
    tx = ServerNonInviteTransaction(req, 0.0)
    assert tx.receive(req, 0.1) == []
    assert tx.messages_to_send() == []  # Trying: nothing to resend yet
    tx.send_response(make_response(req, 200, to_tag="x"), 0.2)
    (first,) = tx.messages_to_send()
    assert tx.receive(req, 0.7) == []
    assert tx.messages_to_send() == [first]
    assert tx.get_timer() == pytest.approx(32.2)  # Timer J
    assert tx.handle_timer(32.2) == [TransactionTerminated()]


def test_layer_matching_by_branch_method_and_sent_by() -> None:
    layer = TransactionLayer()
    req = invite()
    client = ClientInviteTransaction(req, 0.0)
    layer.add(client)
    assert layer.match_response(response(req, 180)) is client
    cancel = invite(method="CANCEL")
    assert layer.match_response(response(cancel, 200)) is None  # CANCEL is its own tx

    server = ServerInviteTransaction(req, 0.0)
    layer.add(server)
    assert layer.match_request(req) is server
    assert layer.match_request(cancel) is None
    assert layer.invite_for_cancel(cancel) is server
    other_host = parse_message(bytes(req).replace(b"127.0.0.1:5060;branch", b"10.0.0.9:5060;branch"))
    assert isinstance(other_host, Request)
    assert layer.match_request(other_host) is None


def test_layer_rfc2543_request_without_cookie_does_not_crash() -> None:
    layer = TransactionLayer()
    req = parse_message(bytes(invite()).replace(b";branch=z9hG4bKtest1", b""))
    assert isinstance(req, Request)
    tx = ServerInviteTransaction(req, 0.0)
    layer.add(tx)
    assert layer.match_request(req) is tx


def test_layer_timers_and_garbage_collection() -> None:
    layer = TransactionLayer()
    tx = ClientNonInviteTransaction(invite(method="OPTIONS"), 0.0, timeout=1.0)
    layer.add(tx)
    assert layer.get_timer() == pytest.approx(0.5)
    layer.handle_timer(0.5)
    fired = layer.handle_timer(1.0)
    assert fired and fired[0][0] is tx
    assert TransactionTimedOut("timeout") in fired[0][1]
    layer.remove_terminated()
    assert layer.all() == []


def test_full_server_table_evicts_the_oldest_transaction_that_only_absorbs() -> None:
    layer = TransactionLayer(max_server=3)
    regs = [ServerNonInviteTransaction(invite(f"z9hG4bKreg{i}", "REGISTER"), float(i))
            for i in range(2)]
    ringing = ServerInviteTransaction(invite("z9hG4bKring"), 0.0)  # not answered: live
    for tx in (*regs, ringing):
        layer.add(tx)
    for i, tx in enumerate(regs):  # answered: Completed, kept 32 s for Timer J
        tx.send_response(make_response(tx.request, 200, to_tag="t"), float(i))
    assert layer.counts() == (0, 3)
    assert not layer.server_full()  # room made: the oldest absorbing one went
    assert layer.evicted == 1
    assert layer.match_request(regs[0].request) is None
    assert layer.match_request(regs[1].request) is regs[1]
    layer.add(ServerInviteTransaction(invite("z9hG4bKnew"), 2.0))
    assert not layer.server_full() and layer.evicted == 2
    assert layer.match_request(ringing.request) is ringing
    layer.add(ServerInviteTransaction(invite("z9hG4bKnew2"), 2.0))
    # only live transactions left (two ringing INVITEs and a fresh one): full, 503
    assert layer.server_full() and layer.evicted == 2 and layer.counts() == (0, 3)


def test_eviction_takes_confirmed_and_accepted_invites_but_never_completed_ones() -> None:
    layer = TransactionLayer(max_server=3)
    rejected, confirmed, answered = (ServerInviteTransaction(invite(f"z9hG4bK{n}"), 0.0)
                                     for n in ("rej", "conf", "ok"))
    for tx in (rejected, confirmed, answered):
        layer.add(tx)
    rejected.send_response(make_response(rejected.request, 486, to_tag="t"), 0.0)
    confirmed.send_response(make_response(confirmed.request, 486, to_tag="t"), 0.0)
    answered.send_response(make_response(answered.request, 200, to_tag="t"), 0.0)
    ack = invite("z9hG4bKconf", "ACK")
    confirmed.receive(ack, 0.1)
    assert (rejected.state, confirmed.state, answered.state) == (
        TxState.COMPLETED, TxState.CONFIRMED, TxState.ACCEPTED)
    # oldest first: the 2xx's (absorbing since 0.0), then the ACKed 486's (since 0.1)
    assert not layer.server_full() and layer.match_request(answered.request) is None
    layer.add(ServerInviteTransaction(invite("z9hG4bKx"), 1.0))
    assert not layer.server_full() and layer.match_request(confirmed.request) is None
    layer.add(ServerInviteTransaction(invite("z9hG4bKy"), 1.0))
    # Completed still resends its 486 until the ACK: it is not only absorbing
    assert layer.server_full()
    assert layer.match_request(rejected.request) is rejected and layer.evicted == 2
