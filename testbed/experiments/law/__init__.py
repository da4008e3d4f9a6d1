"""Pieces of the law-recovery study (:mod:`testbed.experiments.law_recovery`): the markdown report computed from
its tables (``report``) and its figures (``figures``)."""
