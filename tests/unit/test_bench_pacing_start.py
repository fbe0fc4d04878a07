"""bench.rtp_pacing's start-of-stream figures on synthetic streams."""

from bench.capture import UdpDatagram
from bench.rtp_pacing import rtcp_counts, stream_start


def test_a_stream_that_doubles_its_first_tick_is_named() -> None:
    # the defect of issue 6 item 4: packet 0 is 20 ms late, packet 1 goes right after it
    doubled = [(0.020, 1, 0), (0.02005, 2, 160)] + [(0.020 * k, k + 1, 160 * k)
                                                    for k in range(2, 50)]
    start = stream_start(doubled)
    assert abs(start["first_interval_ms"] - 19.95) < 1e-6 and start["b2b_at"] == [1]


def test_an_even_stream_starts_on_time() -> None:
    even = [(1.0 + 0.020 * k + (0.0003 if k % 3 else 0.0), 65530 + k, 2**32 - 480 + 160 * k)
            for k in range(100)]
    start = stream_start([(t, s % 65536, ts % 2**32) for t, s, ts in even])
    assert start["first_interval_ms"] < 0.5 and start["b2b_at"] == []


def test_rtcp_is_counted_by_the_senders_port_range() -> None:
    rr = bytes.fromhex("80c90001" "00000001")
    rtp = bytes([0x80, 0]) + bytes(170)
    grams = [UdpDatagram(0.0, "127.0.0.1", 30001, "127.0.0.1", 20001, rr),
             UdpDatagram(0.0, "127.0.0.1", 30000, "127.0.0.1", 20000, rtp),
             UdpDatagram(0.0, "127.0.0.1", 20001, "127.0.0.1", 30001, rr + rr)]
    assert rtcp_counts(grams, {"gw": (30000, 30999), "bs": (20000, 29999)}) == {"gw": 1, "bs": 1}
