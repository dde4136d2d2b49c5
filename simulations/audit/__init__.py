"""The empirical privacy audit (`privatune audit`): canaries, the runs, the attack.

Modules: ``canaries`` draws the secrets, ``plant`` writes them into one client's data,
``attack`` scores them with the final global adapter, ``metrics`` turns scores into an
AUC and exposures, ``run`` runs the non-private and DP federations and writes
``audit.json``; ``simulations.audit.report`` renders the page.
"""
