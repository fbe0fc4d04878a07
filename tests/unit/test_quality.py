"""Receive statistics (loss, duplicates, jitter) and the E-model figures."""

from __future__ import annotations

import pytest

from gateway.media.quality import (
    BPL_G711,
    BPL_G711_PLC,
    ReceiveStats,
    delay_impairment,
    effective_equipment_impairment,
    mos,
    r_factor,
)
from gateway.media.rtp import RtpPacket


def pkt(seq: int, ts: int, ssrc: int = 7) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload=bytes(160))


def test_steady_stream_has_no_jitter_even_across_timestamp_wrap() -> None:
    st = ReceiveStats()
    start_ts = 2**32 - 50 * 160
    for k in range(100):
        st.update(pkt(k, start_ts + 160 * k), 10.0 + 0.020 * k)
    assert st.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert st.received == 100 and st.lost == 0 and st.octets == 16000


def test_jitter_follows_rfc3550_estimator() -> None:
    st = ReceiveStats()
    st.update(pkt(0, 0), 0.0)
    st.update(pkt(1, 160), 0.040)  # 20 ms later than the media clock: D = 160 ticks
    assert st.jitter == pytest.approx(160 / 16)
    # arrivals alternately on time and 10 ms late: |D| = 80 ticks every packet -> J -> 10 ms
    st = ReceiveStats()
    for k in range(400):
        st.update(pkt(k, 160 * k), 0.020 * k + (0.010 if k % 2 else 0.0))
    assert st.jitter_ms == pytest.approx(10.0, abs=0.01)


def test_events_can_be_kept_out_of_jitter() -> None:
    st = ReceiveStats()
    for k in range(50):
        st.update(pkt(k, 1000), 0.020 * k, timing=False)  # telephone-events: fixed timestamp
    assert st.jitter == 0.0 and st.received == 50


def test_loss_counted_across_sequence_wrap() -> None:
    st = ReceiveStats()
    dropped = {65530, 65535, 0, 3, 40}
    seqs = [(65500 + k) & 0xFFFF for k in range(100)]
    for k, seq in enumerate(seqs):
        if seq not in dropped:
            st.update(pkt(seq, 160 * k), 0.020 * k)
    assert st.expected == 100
    assert st.lost == 5
    assert st.loss_fraction == pytest.approx(0.05)
    assert st.extended_max_seq == 65536 + 63  # one wrap cycle, then sequence 63


def test_duplicates_and_late_packets() -> None:
    st = ReceiveStats()
    for seq in (0, 1, 3, 2, 3, 1, 4, 4):
        st.update(pkt(seq, 160 * seq), 0.0)
    assert st.received == 5
    assert st.duplicates == 3
    assert st.late == 1
    assert st.lost == 0


def test_reordered_first_packet_extends_expected() -> None:
    st = ReceiveStats()
    st.update(pkt(10, 1600), 0.0)
    st.update(pkt(9, 1440), 0.001)
    st.update(pkt(11, 1760), 0.02)
    assert st.expected == 3 and st.lost == 0 and st.late == 1


def test_big_jump_is_a_restart_once_confirmed() -> None:
    st = ReceiveStats()
    for seq in range(10):
        st.update(pkt(seq, 160 * seq), 0.0)
    st.update(pkt(20000, 0), 0.0)  # lone stray: ignored
    assert st.received == 10 and st.lost == 0
    st.update(pkt(30000, 0), 0.0)
    st.update(pkt(30001, 160), 0.0)  # follows on: the sender restarted its numbering
    st.update(pkt(30002, 320), 0.0)
    assert st.restarts == 1
    assert st.received == 12 and st.expected == 12 and st.lost == 0


def test_new_ssrc_keeps_call_totals() -> None:
    st = ReceiveStats()
    for seq in (0, 1, 2, 4):  # one lost
        st.update(pkt(seq, 160 * seq), 0.0)
    for seq in (500, 501, 502):
        st.update(pkt(seq, 0, ssrc=99), 0.0)
    assert st.received == 7 and st.expected == 8 and st.lost == 1


def test_interval_fraction_lost_resets_each_report() -> None:
    st = ReceiveStats()
    for seq in range(10):
        if seq != 5:
            st.update(pkt(seq, 0), 0.0)
    assert st.interval_fraction_lost() == pytest.approx(0.1)
    for seq in range(10, 20):
        st.update(pkt(seq, 0), 0.0)
    assert st.interval_fraction_lost() == 0.0


def test_r_factor_at_the_g107_default_values_is_93_2() -> None:
    # G.107 with every parameter at its default: Ro 94.77, Is 1.41, Id 0.15, R 93.2
    assert r_factor(0, 0) == pytest.approx(93.2, abs=0.01)
    assert delay_impairment(0) == pytest.approx(0.15, abs=0.01)


def test_absolute_delay_impairment_follows_g107_idd() -> None:
    # Idd is 0 up to Ta = 100 ms; at Ta = 200 ms X = 1: 25((2)^(1/6) - 3(1 + 3^-6)^(1/6) + 2)
    idle_only = delay_impairment(100, t=0, tr=0)
    assert idle_only == pytest.approx(delay_impairment(0), abs=1e-9)
    idd_200 = 25 * (2 ** (1 / 6) - 3 * (1 + 3 ** -6) ** (1 / 6) + 2)
    assert delay_impairment(200, t=0, tr=0) - idle_only == pytest.approx(idd_200, abs=1e-6)
    assert idd_200 == pytest.approx(3.04, abs=0.01)
    # more delay never rates better, and past G.114's 150 ms it falls quickly
    rs = [r_factor(d, 0) for d in range(0, 401, 25)]
    assert rs == sorted(rs, reverse=True)
    assert r_factor(150, 0) - r_factor(300, 0) > 15


def test_loss_uses_g113_g711_bpl_with_and_without_concealment() -> None:
    assert effective_equipment_impairment(2.0) == pytest.approx(95 * 2 / 27.1)
    assert effective_equipment_impairment(2.0, bpl=BPL_G711) == pytest.approx(95 * 2 / 6.3)
    assert BPL_G711_PLC == 25.1 and BPL_G711 == 4.3
    assert r_factor(0, 3.0) == pytest.approx(93.2 - 95 * 3 / 28.1, abs=0.01)
    assert r_factor(0, 3.0, plc=False) == pytest.approx(93.2 - 95 * 3 / 7.3, abs=0.01)
    # bursty loss (BurstR 2) hurts more than random loss of the same rate
    assert r_factor(0, 3.0, burst_r=2.0) < r_factor(0, 3.0)


def test_mos_mapping() -> None:
    assert mos(93.2) == pytest.approx(4.41, abs=0.005)  # the G.711 ceiling
    assert mos(50) == pytest.approx(2.575)
    assert mos(-5) == 1.0 and mos(120) == 4.5 and mos(3) >= 1.0
    values = [mos(r) for r in range(0, 101, 5)]
    assert values == sorted(values)
