"""Network pieces shared by the server and outgoing associations.

TLS, the connection table, the syntaxes an instance travels in.
"""
