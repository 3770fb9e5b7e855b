"""The ground floor: what every layer may import and that imports nothing above it -- the
error hierarchy, process identity (/proc start time, boot id, process groups), loopback
ports, and the C parts built where they run."""
