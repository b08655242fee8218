import CMPI

/// A Swift scalar with a matching MPI datatype.
public protocol MPIScalar: Numeric, Comparable {
    static var mpiType: MPI_Datatype { get }
}

extension Float: MPIScalar { public static var mpiType: MPI_Datatype { squeeze_type_float() } }
extension Double: MPIScalar { public static var mpiType: MPI_Datatype { squeeze_type_double() } }
extension Int: MPIScalar { public static var mpiType: MPI_Datatype { squeeze_type_int64() } }
extension Int32: MPIScalar { public static var mpiType: MPI_Datatype { squeeze_type_int32() } }
extension UInt8: MPIScalar { public static var mpiType: MPI_Datatype { squeeze_type_uint8() } }

/// Reduction operators supported by `Communicator.allreduce`.
public enum ReduceOp: Sendable {
    case sum, max, min
    var handle: MPI_Op {
        switch self {
        case .sum: return squeeze_op_sum()
        case .max: return squeeze_op_max()
        case .min: return squeeze_op_min()
        }
    }
}
