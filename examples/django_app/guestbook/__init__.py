"""The guestbook: signing stores an entry and sends ``guestbook.signed``; its receiver, run
later by the middleware, publishes the entry."""
