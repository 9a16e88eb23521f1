"""The audit log: every step of every task in one tamper-evident, hash-chained record.

`chain.AuditLog` appends entries (`entry.Kind`) durably, ahead of the actions they guard;
`shots.ScreenshotStore` keeps the screenshots they name, once each, by content hash;
`verify.verify` checks it all against a published `entry.Head`, its `report.Report` naming the
first bad entry; `retention.prune` removes old screenshots on the record; `export.export_task`
writes one task out to be checked and read offline (`timeline` renders its index.html and the
plain words `dispatch audit show` prints).
"""
