"""Flow record encoders (NetFlow v5, v8, v9, IPFIX)."""
