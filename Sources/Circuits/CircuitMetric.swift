import InterpModels

/// Circuit discovery's name for the one metric type of patching and circuit discovery. ACDC minimises it: a metric
/// that grows with the behaviour (a logit difference) is given `negated()`.
public typealias CircuitMetric = LogitMetric
