"""The pseudo-label recipe (docs/PAPERS.md §3): captions written for other songs, assigned to every
clip by MuLan, and an audit of how noisy and biased they are.

`bank.py` (the caption bank) with `writers.py` (language model, midicap, templates, human captions)
and `cleaning.py` (sentences, names removed, duplicates); `labelling.py` (MuLan embeddings of the
bank and the clips, the counting pass, the export); `quality.py` (the audit).  Binaries:
`write_bank`, `label`, `audit`.  What training reads inline is `data.pseudo_label_index`.
"""
