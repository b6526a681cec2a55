"""The web page at /: agents, supervisors and the DPO in their own language and time zone
(docs/web.md). ``site.add_routes`` puts its pages on the access API's application."""
