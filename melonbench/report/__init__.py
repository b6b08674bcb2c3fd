"""The report: stored runs in, paper-style tables and plots out; it never reruns an experiment.

``runs`` reads runs back from the store and aligns them; ``tables`` and ``significance`` build the accuracy,
ablation, timing, agreement and paired-test tables into the one result object of ``model``, with the
statistics of ``stats``; ``render`` draws that object as terminal, Markdown or LaTeX tables and ``plots`` as
figures; ``build`` ties them together (``make_report``)."""
