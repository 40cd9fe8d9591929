"""The one channel between test processes and the watchdog: ``wire`` (its layout and rules),
``client`` (the test process's end), ``server`` (the watchdog's end), ``accounts`` (waiting
for the watchdog's account of an expiry), ``descriptors`` (descriptors a test may close)."""
