"""The orchestration floor: load → compile → plan → execute → record.

``session`` runs one pipeline (the run lock, the recorder and the report beside it), ``plan``
decides which stages run and which are cached, and ``watch`` re-runs pipelines when their
triggers fire. The floor is named ``runner`` (as Kedro's is), not ``run``: ``pipeflow.run`` is the
public function that runs a spec, and a subpackage of the same name would shadow it.
"""
