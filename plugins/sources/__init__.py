"""Packet source drivers (pcap/pcapng file replay, AF_PACKET live capture)."""
