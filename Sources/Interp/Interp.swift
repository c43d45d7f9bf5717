// `import Interp` gives a script the whole toolkit.
@_exported import InterpCore
@_exported import SafeTensors
@_exported import Tokenization
@_exported import InterpModels
@_exported import ActivationStore
@_exported import SparseAutoencoders
@_exported import Plots
@_exported import Superposition
@_exported import ActivationPatching
@_exported import Circuits
@_exported import Dashboards
