# The element types every CPU kernel is instantiated for (float32 and float64).
ctypedef fused floating:
    float
    double
