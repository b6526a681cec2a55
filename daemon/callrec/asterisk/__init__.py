"""One module per Asterisk interface: ARI (events, channel list) and AMI (MixMonitor)."""
