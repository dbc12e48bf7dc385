"""The manager node: registry, accounts, tickets, placement, images and job dispatch."""
