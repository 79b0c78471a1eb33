"""Jobs, schedules and sensors that keep the platform current without a person."""
