"""The `privatune` command, on top of every role package (common < client, server <
deploy < simulations < privatune): it parses the command line and calls one role."""
