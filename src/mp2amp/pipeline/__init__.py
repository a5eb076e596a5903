"""The pipeline: migrate, status and demo, built from the stages (extract, identity,
transform, load) and journaled in the ledger."""
