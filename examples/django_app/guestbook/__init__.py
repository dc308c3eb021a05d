"""The guestbook: signing stores an entry and defers its publishing: on Django 6 it enqueues
the ``publish_entry`` task (tasks.py, run by the gaesignals task backend), on Django 5 it
sends ``guestbook.signed`` (signals.py); either is run later by the middleware."""
