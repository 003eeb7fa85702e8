"""Export sequence accounting, per domain (v5/v9/sFlow datagrams, IPFIX data records).

Every break in the sequence is a *sequence failure* (nfdump's term): a gap, a
late or repeated message, an exporter restart.  Only a plausible forward gap
(at most :data:`LOSS_WINDOW`) is counted as lost; a jump further ahead or
behind is a restart (the sequence follows the new numbers, nothing is counted
lost), and a message that arrives late, within the window behind, gives back
what its gap had counted lost and leaves the expected number where it was --
unless the next message continues from it: then the exporter restarted (or
replays), and the sequence follows it from there.
Numbers are modulo 2^32, so a wrap-around is an ordinary step.
"""

from __future__ import annotations

LOSS_WINDOW = 1 << 20  # larger forward jumps are restarts, not losses
MASK = 0xFFFF_FFFF


def account(dec, dom, seq: int, advance: int) -> None:
    """Check message *seq* (covering *advance* units) of *dom* against the sequence expected."""
    nxt = dom.next_seq
    if nxt is not None and seq != nxt and restarted(dec, dom, seq):
        nxt = seq
    if nxt is not None and seq != nxt:
        exp = dom.exporter
        exp.counters["sequence_failures"] += 1
        dec.counters.inc("sequence-failures")
        ahead = (seq - nxt) & MASK
        behind = (nxt - seq) & MASK
        if ahead <= LOSS_WINDOW:
            dom.lost += ahead
            exp.counters["lost"] += ahead
            dec.counters.drop("exporter", "sequence-gap", ahead)
        elif behind <= LOSS_WINDOW:
            back = min(advance, dom.lost)  # it was counted lost when its successor came: give it back
            if back > 0:
                dom.lost -= back
                exp.counters["lost"] -= back
                drops = dec.counters.drops
                drops[("exporter", "sequence-gap")] -= back
                if drops[("exporter", "sequence-gap")] <= 0:
                    del drops[("exporter", "sequence-gap")]
            dec.counters.inc("sequence-late")
            dom.alt_seq = (seq + advance) & MASK
            return  # the next expected number stays
        else:
            dec.counters.inc("sequence-resets")
    dom.next_seq = (seq + advance) & MASK
    dom.alt_seq = None


def restarted(dec, dom, seq: int) -> bool:
    """True (and the sequence follows *seq*) when *seq* continues a message that had come behind the sequence."""
    if seq != dom.alt_seq:
        return False
    dom.next_seq = seq
    dom.alt_seq = None
    dec.counters.inc("sequence-resets")
    return True
