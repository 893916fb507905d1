"""Jobs: validated job specs and the code that runs them against the store and repro."""
