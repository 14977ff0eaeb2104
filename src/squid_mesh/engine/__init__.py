"""Engine: commands (start, execute_next, cancel), pure planning, step invocation."""
