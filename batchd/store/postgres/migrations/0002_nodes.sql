-- Reserved for the nodes migration (the lead's branch): this placeholder keeps the
-- numbering without a gap until it lands, and is replaced by it.
SELECT 1;
