"""A small host application that embeds squid-mesh: invoices, a ledger and deliveries in its own
tables, eight workflows, and three checks (smoke, resilience, soak) that answer three questions.
"""
