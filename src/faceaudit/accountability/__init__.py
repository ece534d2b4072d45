"""Accountability: use policies, the moratorium, blind review and the search log, enforced by the server.

The layer between Rekognition's operations (faceaudit.rekognition, which know nothing of
who asks or why) and the applications that take requests (faceaudit.server, and the
console). Every request an application accepts passes through here as a
:class:`~faceaudit.accountability.context.Caller` plus the operation and its request dict:

* ``policies`` / ``guard``: the collection's use policy, the moratorium switch, the
  signed purpose and case, budgets -- checked before the operation runs;
* ``review``: searches under a review policy become review items, decided blind;
* ``searchlog``: one hash-chained record per request, allowed or denied, durable before
  the answer is sent; ``transparency`` is computed from it.

What the log records about one request is gathered as it goes in a
:class:`~faceaudit.accountability.context.Facts`.
"""
