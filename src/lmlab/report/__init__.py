"""The report stage (``report``) and the sweep report of ``make compare`` (``compare``)."""
