"""The web console for operators, reviewers and auditors, served by ``faceaudit serve`` at /console.

Server-rendered pages (Jinja2, autoescaped; no scripts), signed in with the API's own access
keys, calling operations only through the server's path (faceaudit.server.app.RekognitionApp.call)
so that roles, use policies and the search log apply exactly as to a signed API request.

* app: the ASGI app, its routes and pages, and who each page is for (PAGE_ROLES);
* sessions: server-side sessions and the sign-in rate limit, in DATA_DIR/console.db;
* web: requests, responses, forms, cookies and the security headers;
* figures: what a threshold means per group, from the shipped false match table;
* review: the blind review form (candidates by letter, decisions and reasons, revealed scores);
* reports: the audit reports of ``faceaudit serve --reports DIR``;
* templating: the Jinja2 environment (the audit and transparency reports' templates render inside
  the console's frame).

docs/console.md describes the pages, with screenshots.
"""

from faceaudit.console.app import LABEL, PAGE_ROLES, Console, Operations

__all__ = ["LABEL", "PAGE_ROLES", "Console", "Operations"]
