"""What the user sees, one formatter per output, each made from :mod:`pytest_expiry.record`:

* :mod:`~pytest_expiry.report.carry`: how records ride on pytest's reports (``report.expiry``)
  to wherever the reports go (the xdist controller included);
* :mod:`~pytest_expiry.report.terminal`: the failure's expiry section and the terminal summary;
* :mod:`~pytest_expiry.report.junit`: the JUnit properties;
* :mod:`~pytest_expiry.report.jsonfile`: the JSON report (``--expiry-report``);
* :mod:`~pytest_expiry.report.log`: every record of the session, gathered where reports arrive.
"""
