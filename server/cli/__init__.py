"""Every ``ioc`` sub-command, the shared way they load settings and reach the database, and
the embedded services ``ioc demo`` runs.
"""
