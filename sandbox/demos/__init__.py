"""Runnable demos ported from GoStage's spawn examples (`sandbox demo`)."""
